"""Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``) in corral's terms,
transport-free: request bodies, the body as the OpenAI chat corral runs, and the run's chunks as a
``message`` object or the Messages stream's typed events."""
