"""Local serving: the bundled model (:mod:`.models`) and the vLLM-CPU server manager
(:mod:`.server`) behind ``flowopt backend up/status/down``. Nothing here is imported by
flowopt's core; it needs the ``local`` extra only when a server is started."""

__all__: list[str] = []
