"""Scale-out on Ray Serve (`corral serve --ray`, `corral ray status`).

- :mod:`.plan`: what is asked of Ray (replicas, resources, a local cluster's CPUs), pure, no Ray import.
- :mod:`.replica`: one replica, corral's runtime and HTTP app inside a Ray Serve deployment.
- :mod:`.registry`: the named actor replicas report their models and memory to.
- :mod:`.cluster`: joining or starting a cluster, deploying, waiting, stopping.

Ray is the optional extra ``corral[ray]``; only these modules import it, and only these commands
import them.
"""
