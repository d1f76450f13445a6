"""flowopt inside LangChain and LangGraph apps.

- :class:`ChatFlowopt`: a LangChain chat model that runs a flowopt middleware stack
  in-process over flowopt's backends (``bind_tools``, structured output, streaming, async).
- :class:`FlowoptMiddleware`: a LangChain agent middleware (``create_agent(...,
  middleware=[FlowoptMiddleware(...)])``) that adds flowopt's optimizations to an existing
  agent without changing its model. Needs ``pip install 'flowopt[langchain]'``.

Imported lazily so ``import flowopt.langchain`` costs nothing until a name is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ChatFlowopt", "FlowoptMiddleware"]

if TYPE_CHECKING:
    from flowopt.langchain._agent_middleware import FlowoptMiddleware
    from flowopt.langchain._chat_model import ChatFlowopt


def __getattr__(name: str) -> Any:
    if name == "ChatFlowopt":
        from flowopt.langchain._chat_model import ChatFlowopt

        return ChatFlowopt
    if name == "FlowoptMiddleware":
        from flowopt.langchain._agent_middleware import FlowoptMiddleware

        return FlowoptMiddleware
    raise AttributeError(f"module 'flowopt.langchain' has no attribute {name!r}")
