"""Client APIs' shapes, free of any transport: request bodies, how they become corral's task
requests, and how results become the objects each API's clients read. The HTTP routes
(``corral.api``) and the stdio sidecar (``corral.sidecar``) both call these, so a chat is the
same chat through either door."""
