"""`corral export`: a standalone, pinned deployment (serve.py, requirements, Dockerfiles, README)
for one model, rendered from the Jinja2 templates in ``templates/``; no corral in what it writes."""
