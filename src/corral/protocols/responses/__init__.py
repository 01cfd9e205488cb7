"""OpenAI's Responses API (``/v1/responses``) in corral's terms, transport-free: request bodies,
the body as the OpenAI chat corral runs, and the run as a ``response`` object or the Responses
stream's typed events."""
