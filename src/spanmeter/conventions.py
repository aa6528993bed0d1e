"""Span conventions: attribute names, span classification and value coercion.

Pure functions and constants, no SDK state. Names follow the OpenTelemetry GenAI
semantic conventions v1.41 (https://opentelemetry.io/docs/specs/semconv/gen-ai/),
with the older names that instrumentations still emit read as fallbacks.

Coercion rules (what happens to a value the processor cannot use as it is) are
stated here once and counted by reason in ``spanmeter_dropped_values_total``:

- token counts: ``int`` in ``[0, MAX_TOKENS]`` is used; a finite ``float`` in that
  range is rounded; a ``str`` of decimal digits is parsed; ``bool`` (``bool_value``),
  negative (``negative``), NaN/inf (``not_finite``), above ``MAX_TOKENS``
  (``out_of_range``), other strings (``not_a_number``) and other types
  (``wrong_type``) are dropped: the call is still counted, that token count is not;
- label values: ``str`` is used; ``int``/``float`` are turned into text; other types
  become ``unknown`` (``wrong_type``); text longer than ``MAX_LABEL_LENGTH``
  characters is cut (``truncated``); characters that cannot be encoded as UTF-8
  (lone surrogates from undecodable bytes) become ``?`` (``invalid_utf8``); empty
  text becomes ``unknown``.
"""

from __future__ import annotations

import math

# --- GenAI semantic conventions v1.41 ------------------------------------------------
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"  # provider attribute before v1.37
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
RESPONSE_ID = "gen_ai.response.id"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
TOOL_NAME = "gen_ai.tool.name"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_CALL_ID = "gen_ai.tool.call.id"
CONVERSATION_ID = "gen_ai.conversation.id"
INPUT_TOKENS = "gen_ai.usage.input_tokens"  # includes cached input
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"  # includes reasoning
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
CACHE_WRITE_TOKENS_NEXT = "gen_ai.usage.cache_write.input_tokens"  # rename pending upstream
REASONING_TOKENS = "gen_ai.usage.reasoning.output_tokens"
PROMPT_TOKENS_OLD = "gen_ai.usage.prompt_tokens"  # before v1.27
COMPLETION_TOKENS_OLD = "gen_ai.usage.completion_tokens"
ERROR_TYPE = "error.type"
INPUT_MESSAGES = "gen_ai.input.messages"  # content: read only when the user opts in
OUTPUT_MESSAGES = "gen_ai.output.messages"
OI_INPUT_VALUE = "input.value"  # OpenInference
OI_OUTPUT_VALUE = "output.value"
# spanmeter's own span attributes (set by AgentRun.end_conversation()): the run is the last
# turn of its conversation, and whether the conversation was escalated to a human.
CONVERSATION_ENDED = "spanmeter.conversation.ended"
CONVERSATION_ESCALATED = "spanmeter.conversation.escalated"

OP_CHAT = "chat"
OP_INVOKE_AGENT = "invoke_agent"
OP_EXECUTE_TOOL = "execute_tool"

# Kinds of span the processor derives metrics from.
KIND_AGENT = 1
KIND_INFERENCE = 2
KIND_TOOL = 3

#: ``gen_ai.operation.name`` -> kind. Operations not listed (retrieval, workflows,
#: memory, create_agent) produce no metrics of their own but still carry ancestry.
OPERATION_KINDS: dict[str, int] = {
    "chat": KIND_INFERENCE,
    "text_completion": KIND_INFERENCE,
    "generate_content": KIND_INFERENCE,
    "embeddings": KIND_INFERENCE,
    "invoke_agent": KIND_AGENT,
    "execute_tool": KIND_TOOL,
}

#: Token types, in the order the processor stores them.
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")

STATUS_SUCCESS = "success"
STATUS_ERROR = "error"
STATUS_TIMEOUT = "timeout"
#: ``error.type`` used when a span failed without saying how (the convention's fallback).
ERROR_OTHER = "_OTHER"

UNKNOWN = "unknown"
MAX_TOKENS = 10**12
MAX_LABEL_LENGTH = 128


def kind_of(attributes) -> int | None:
    """The kind of a span from its attributes, or None when it is none of ours.

    Used when a span starts (attributes given at creation) and when it ends.
    """
    op = attributes.get(OPERATION_NAME)
    if op.__class__ is str:
        return OPERATION_KINDS.get(op)
    return None


#: The fields of a record, the tuple :func:`read` returns (a tuple: the cheapest thing
#: Python builds). Token counts keep the GenAI meaning (input includes cache reads and
#: writes, output includes reasoning), are ints or None (absent), and were coerced by the
#: rules above; ``drops`` lists the (field, reason) of values that could not be used.
RECORD_FIELDS = (
    "kind", "operation", "agent", "model", "response_model", "provider", "tool", "tool_type",
    "error_type", "conversation", "response_id",
    "input", "output", "cache_read", "cache_write", "reasoning", "drops", "time_to_first_chunk",
)  # fmt: skip
_TOKEN_FIELDS = tuple(f"{t}_tokens" for t in TOKEN_TYPES)


def as_dict(record: tuple) -> dict:
    """A record as a dictionary of :data:`RECORD_FIELDS` (for tests and debugging)."""
    return dict(zip(RECORD_FIELDS, record))


def coerce_tokens(tokens: tuple) -> tuple[tuple, list]:
    """Token counts made usable by :func:`coerce_count`, and the (field, reason) drops."""
    out, drops = [], []
    for field, value in zip(_TOKEN_FIELDS, tokens):
        if value is not None:
            value, reason = coerce_count(value)
            if reason is not None:
                drops.append((field, reason))
        out.append(value)
    return tuple(out), drops


def read(attributes, kind: int, failed: bool) -> tuple:
    """The record (see :data:`RECORD_FIELDS`) of a span of ``kind`` (from :func:`kind_of`)."""
    get = attributes.get
    error_type = get(ERROR_TYPE)
    if error_type is not None or failed:
        error_type = outcome(error_type, failed)[1]
    drops = None
    if kind == KIND_INFERENCE:
        response_model = get(RESPONSE_MODEL)
        i = get(INPUT_TOKENS)
        if i is None:
            i = get(PROMPT_TOKENS_OLD)
        o = get(OUTPUT_TOKENS)
        if o is None:
            o = get(COMPLETION_TOKENS_OLD)
        cr = get(CACHE_READ_TOKENS)
        cw = get(CACHE_WRITE_TOKENS)
        if cw is None:
            cw = get(CACHE_WRITE_TOKENS_NEXT)
        rs = get(REASONING_TOKENS)
        # Inline check (a loop costs more): every count absent or a plain int in range.
        if not (
            (i is None or (i.__class__ is int and 0 <= i <= MAX_TOKENS))
            and (o is None or (o.__class__ is int and 0 <= o <= MAX_TOKENS))
            and (cr is None or (cr.__class__ is int and 0 <= cr <= MAX_TOKENS))
            and (cw is None or (cw.__class__ is int and 0 <= cw <= MAX_TOKENS))
            and (rs is None or (rs.__class__ is int and 0 <= rs <= MAX_TOKENS))
        ):
            (i, o, cr, cw, rs), drops = coerce_tokens((i, o, cr, cw, rs))
        ttfc = get(TIME_TO_FIRST_CHUNK)
        if ttfc is not None and not (ttfc.__class__ in (int, float) and 0 <= ttfc < 1e6):
            drops = (drops or []) + [("time_to_first_chunk", "out_of_range")]
            ttfc = None
        return (
            kind, get(OPERATION_NAME), get(AGENT_NAME), get(REQUEST_MODEL) or response_model, response_model,
            get(PROVIDER_NAME) or get(SYSTEM), None, None, error_type, None, get(RESPONSE_ID),
            i, o, cr, cw, rs, drops, ttfc,
        )  # fmt: skip
    if kind == KIND_TOOL:
        return (
            kind, get(OPERATION_NAME), get(AGENT_NAME), None, None, None, get(TOOL_NAME), get(TOOL_TYPE),
            error_type, None, None, None, None, None, None, None, drops, None,
        )  # fmt: skip
    return (
        kind, get(OPERATION_NAME), get(AGENT_NAME), None, None, None, None, None,
        error_type, get(CONVERSATION_ID), None, None, None, None, None, None, drops, None,
    )  # fmt: skip


def is_timeout(error_type: str) -> bool:
    """The rule that tells a timeout from other failures: ``error.type`` names one."""
    return "timeout" in error_type.lower()


def status_of(error_type: str) -> str:
    """Status label of a failed operation: ``timeout`` or ``error``."""
    return STATUS_TIMEOUT if is_timeout(error_type) else STATUS_ERROR


def outcome(error_type, failed: bool) -> tuple[str, str | None]:
    """(status label, error.type) of a finished operation.

    ``error_type`` is the span's ``error.type`` (any value); ``failed`` whether its status
    is ERROR. A span with ``error.type`` failed even when its status was left unset.
    """
    if error_type is None or error_type == "":
        if not failed:
            return STATUS_SUCCESS, None
        return STATUS_ERROR, ERROR_OTHER
    if error_type.__class__ is not str:
        error_type = str(error_type)
    return (STATUS_TIMEOUT if is_timeout(error_type) else STATUS_ERROR), error_type


def error_type_of(exc: BaseException) -> str:
    """``error.type`` for an exception: its qualified class name, or ``timeout``.

    A ``TimeoutError`` (or subclass) whose name does not say so is reported as
    ``timeout`` so the processor's rule (:func:`is_timeout`) recognises it.
    """
    cls = type(exc)
    module = cls.__module__
    name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    if isinstance(exc, TimeoutError) and not is_timeout(name):
        return "timeout"
    return name


def coerce_count(value) -> tuple[int | None, str | None]:
    """(count, None) when ``value`` is a usable token count, else (None, drop reason)."""
    cls = value.__class__
    if cls is bool:
        return None, "bool_value"
    if cls is int or isinstance(value, int):
        if value < 0:
            return None, "negative"
        if value > MAX_TOKENS:
            return None, "out_of_range"
        return int(value), None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, "not_finite"
        if value < 0:
            return None, "negative"
        if value > MAX_TOKENS:
            return None, "out_of_range"
        return round(value), None
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return coerce_count(int(text))
        return None, "not_a_number"
    return None, "wrong_type"


def coerce_label(value) -> tuple[str, str | None]:
    """(label value, drop reason or None) for any attribute value."""
    reason = None
    if value.__class__ is not str:
        if isinstance(value, str):
            value = str(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = repr(value)
        else:
            return UNKNOWN, "wrong_type"
    if len(value) > MAX_LABEL_LENGTH:
        value = value[:MAX_LABEL_LENGTH]
        reason = "truncated"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
            reason = "invalid_utf8"
    if not value:
        return UNKNOWN, reason
    return value, reason
