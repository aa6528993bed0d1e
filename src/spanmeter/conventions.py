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
- ``error.type`` (a label): exception class names (dotted identifiers such as
  ``openai.RateLimitError``), provider codes of the same shape (``rate_limit_exceeded``) and
  HTTP status codes (``429``) are kept; anything else (free text that may hold personal
  data, non-string values) becomes ``_OTHER`` (``error_type`` ``free_text`` /
  ``wrong_type``);
- names taken from a span's name when no attribute names the agent, workflow or tool
  (OpenInference's LangChain agents, openai-agents' workflow): kept only when they look like
  a name a developer gave (letters, digits, ``_ . - : /`` and spaces, at most 64 characters,
  no run of three digits, no ``@``), else absent: free text and ids stay out of labels;
- identifiers kept in memory (response ids, conversation ids): longer than
  :data:`MAX_KEY_LENGTH` characters are replaced by a hash of them, so memory is bounded by
  entries, not by what a span carries.

One reader: :func:`kind_of` and :func:`run_name` serve the processor when a span starts
(ancestry) and :func:`read` when it ends (the :class:`Record`), so both agree.
"""

from __future__ import annotations

import json
import math
import re
from typing import NamedTuple

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
# Fallback names other instrumentations use for the same GenAI fields.
CACHE_READ_TOKENS_OLD = "gen_ai.usage.cache_read_input_tokens"  # OpenLLMetry before 0.4x
CACHE_WRITE_TOKENS_OLD = "gen_ai.usage.cache_creation_input_tokens"
REASONING_TOKENS_FLAT = "gen_ai.usage.reasoning_tokens"  # OpenLLMetry, OpenLIT
REASONING_TOKENS_DETAILS = "gen_ai.usage.details.reasoning_tokens"  # pydantic-ai
THOUGHTS_TOKENS_DETAILS = "gen_ai.usage.details.thoughts_tokens"  # pydantic-ai on Google models
USAGE_RAW = "gen_ai.usage.raw"  # Logfire: the provider's usage object as JSON text
WORKFLOW_NAME = "gen_ai.workflow.name"
LOGFIRE_SPAN_TYPE = "logfire.span_type"  # "log" for Logfire's zero-duration log spans
PYDANTIC_AGENT_NAME = "agent_name"  # pydantic-ai before 1.0 ("agent run" spans)
SESSION_ID = "session.id"  # OpenInference's conversation
TELEMETRY_SDK_NAME = "telemetry.sdk.name"  # OpenLIT writes "openlit" on its spans
# --- OpenInference (Arize) ----------------------------------------------------------------
OI_SPAN_KIND = "openinference.span.kind"
OI_MODEL = "llm.model_name"  # the response model, for OpenAI
OI_REQUEST_MODEL = "llm.request.model_name"
OI_RESPONSE_MODEL = "llm.response.model_name"
OI_INVOCATION_PARAMETERS = "llm.invocation_parameters"  # JSON text; holds the request model
OI_PROVIDER = "llm.provider"
OI_SYSTEM = "llm.system"
OI_PROMPT_TOKENS = "llm.token_count.prompt"  # includes cache reads and writes
OI_COMPLETION_TOKENS = "llm.token_count.completion"  # includes reasoning
OI_CACHE_READ_TOKENS = "llm.token_count.prompt_details.cache_read"
OI_CACHE_WRITE_TOKENS = "llm.token_count.prompt_details.cache_write"
OI_REASONING_TOKENS = "llm.token_count.completion_details.reasoning"
OI_AUDIO_PROMPT_TOKENS = "llm.token_count.prompt_details.audio"  # part of the prompt tokens
OI_AUDIO_COMPLETION_TOKENS = "llm.token_count.completion_details.audio"
OI_AGENT_NAME = "agent.name"
OI_TOOL_NAME = "tool.name"
# --- OpenLLMetry (Traceloop) --------------------------------------------------------------
TRACELOOP_SPAN_KIND = "traceloop.span.kind"
TRACELOOP_ENTITY_NAME = "traceloop.entity.name"
TRACELOOP_LC_AGENT = "traceloop.association.properties.lc_agent_name"  # OpenLLMetry under LangChain
OI_METADATA = "metadata"  # OpenInference: JSON text; LangChain puts lc_agent_name in it
LLM_REQUEST_TYPE = "llm.request.type"  # before it wrote gen_ai.operation.name
# spanmeter's own span attributes (set by AgentRun.end_conversation()): the run is the last
# turn of its conversation, and whether the conversation was escalated to a human.
CONVERSATION_ENDED = "spanmeter.conversation.ended"
CONVERSATION_ESCALATED = "spanmeter.conversation.escalated"
# --- GenAI conventions of 2026 (semantic-conventions-genai; Development stability) ----------
#: The process's top-level agent (entity ``gen_ai.main_agent``), read from span attributes.
MAIN_AGENT_NAME = "gen_ai.main_agent.name"
MAIN_AGENT_NAME_MS = "microsoft.gen_ai.main_agent.name"  # Azure Monitor's processor copies it so
#: Per-operation cost (PR #443, issue #287): amount, ISO 4217 currency, provider|local.
COST_AMOUNT = "gen_ai.usage.cost.amount"
COST_CURRENCY = "gen_ai.usage.cost.currency"
COST_SOURCE = "gen_ai.usage.cost.source"
COST_SOURCE_PROVIDER, COST_SOURCE_LOCAL = "provider", "local"
#: Costs in US dollars peers wrote before the convention: OpenInference, OpenLIT, pydantic-ai.
LEGACY_COST_ATTRIBUTES = ("llm.cost.total", "gen_ai.usage.cost", "operation.cost")
#: spanmeter's own cost attribute: where the price of a cost spanmeter wrote came from
#: (``override`` or ``catalogue``), so its processor reports it truthfully.
PRICE_SOURCE = "spanmeter.cost.price_source"
#: Events (span events or log records with this event name), parented to the span they are about.
EVALUATION_RESULT = "gen_ai.evaluation.result"
EVALUATION_NAME = "gen_ai.evaluation.name"
EVALUATION_SCORE_VALUE = "gen_ai.evaluation.score.value"
EVALUATION_SCORE_LABEL = "gen_ai.evaluation.score.label"
EVALUATION_EXPLANATION = "gen_ai.evaluation.explanation"
TOOL_CALL_DECISION = "gen_ai.tool.call.decision"  # the event (PR #535); also seen as a tool span attribute
TOOL_CALL_DECISION_OUTCOME = "gen_ai.tool.call.decision.outcome"
DECISIONS = ("allow", "deny", "require_approval")

OP_CHAT = "chat"
OP_INVOKE_AGENT = "invoke_agent"
OP_EXECUTE_TOOL = "execute_tool"
OP_INVOKE_WORKFLOW = "invoke_workflow"

# Kinds of span the processor derives metrics from.
KIND_AGENT = 1
KIND_INFERENCE = 2
KIND_TOOL = 3
KIND_WORKFLOW = 4  # a run that coordinates agent runs (GenAI ``invoke_workflow``)

#: ``gen_ai.operation.name`` -> kind. Operations not listed (retrieval, workflows,
#: memory, create_agent) produce no metrics of their own but still carry ancestry.
OPERATION_KINDS: dict[str, int] = {
    "chat": KIND_INFERENCE,
    "text_completion": KIND_INFERENCE,
    "generate_content": KIND_INFERENCE,
    "embeddings": KIND_INFERENCE,
    "invoke_agent": KIND_AGENT,
    "execute_tool": KIND_TOOL,
    "invoke_workflow": KIND_WORKFLOW,
}

#: Token types, in the order the processor stores them.
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")

# --- current GenAI conventions (semantic-conventions-genai, docs/gen-ai/client-inference.md) ---
RESPONSE_FINISH_REASON_SINGULAR = "gen_ai.response.finish_reason"  # written by some libraries
#: Finish reasons kept per span (one per generation): a span listing more is cut here.
MAX_FINISH_REASONS = 16
#: ``gen_ai.token.modality`` values: the three a span can split usage into, then ``unknown``
#: for the rest (what the provider did not break down).
MODALITIES = ("text", "image", "audio", "unknown")
#: Token types a span can split by modality (cache writes and reasoning have no split).
MODALITY_SPLIT_TYPES = ("input", "output", "cache_read")
MODALITY_TOKEN_ATTRIBUTES = tuple(
    f"gen_ai.usage.{m}.{'cache_read.input' if t == 'cache_read' else t}_tokens"
    for m in MODALITIES[:3] for t in MODALITY_SPLIT_TYPES
)  # text.input, text.output, text.cache_read, image.input, ..., audio.cache_read

STATUS_SUCCESS = "success"
STATUS_ERROR = "error"
STATUS_TIMEOUT = "timeout"
#: ``error.type`` used when a span failed without saying how (the convention's fallback).
ERROR_OTHER = "_OTHER"

UNKNOWN = "unknown"
MAX_TOKENS = 10**12
MAX_LABEL_LENGTH = 128
MAX_KEY_LENGTH = 128  # ids kept in memory longer than this are hashed


OPENINFERENCE_KINDS: dict[str, int] = {"LLM": KIND_INFERENCE, "EMBEDDING": KIND_INFERENCE, "AGENT": KIND_AGENT,
                                        "TOOL": KIND_TOOL}  # fmt: skip
TRACELOOP_KINDS: dict[str, int] = {"agent": KIND_AGENT, "tool": KIND_TOOL}
LLM_REQUEST_TYPES: dict[str, str] = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}
_OPERATION_OF_KIND = {KIND_INFERENCE: OP_CHAT, KIND_AGENT: OP_INVOKE_AGENT, KIND_TOOL: OP_EXECUTE_TOOL,
                      KIND_WORKFLOW: OP_INVOKE_WORKFLOW}  # fmt: skip


def kind_of(attributes, name: str = "") -> int | None:
    """The kind of a span from its attributes (and name), or None when it is none of ours.

    Used when a span starts (attributes given at creation) and when it ends. Reads, in
    order: ``gen_ai.operation.name`` (GenAI conventions: the official instrumentations,
    OpenLLMetry, OpenLIT, pydantic-ai, Logfire, the anthropic SDK), ``openinference.span.kind``
    (OpenInference), ``traceloop.span.kind`` (Traceloop SDK agents and tools),
    ``llm.request.type`` (OpenLLMetry before it wrote the operation), and pydantic-ai's
    span names before 1.0 (``agent run``, ``running tool ...``).
    """
    get = attributes.get
    op = get(OPERATION_NAME)
    if op.__class__ is str:
        return OPERATION_KINDS.get(op)
    oi = get(OI_SPAN_KIND)
    if oi.__class__ is str:
        return OPENINFERENCE_KINDS.get(oi)
    tl = get(TRACELOOP_SPAN_KIND)
    if tl.__class__ is str:
        return TRACELOOP_KINDS.get(tl)
    rt = get(LLM_REQUEST_TYPE)
    if rt.__class__ is str:
        return KIND_INFERENCE if rt in LLM_REQUEST_TYPES else None
    if name == "agent run":
        return KIND_AGENT
    if name.__class__ is str and name.startswith("running tool"):
        return KIND_TOOL
    return None


#: Span-name prefixes of the conventions' ``{operation} {name}`` span names.
_NAME_PREFIXES = ("invoke_agent ", "invoke_workflow ", "execute_tool ")
_GIVEN_NAME = re.compile(r"[A-Za-z0-9_.:/ -]{1,64}")
_DIGIT_RUN = re.compile(r"[0-9]{3}")


def name_from_span_name(name) -> str | None:
    """The span name as a label value by the rule above, or None when it may be free text."""
    if name.__class__ is not str:
        return None
    for prefix in _NAME_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    name = name.strip()
    if not _GIVEN_NAME.fullmatch(name) or _DIGIT_RUN.search(name) or name == "agent run":
        return None
    return name


def run_name(attributes, kind: int, name: str = "") -> tuple[str | None, bool]:
    """(name, named) of an agent run or workflow span: ``named`` is False when no attribute
    names it and the name (or None) comes from the span name.

    Attributes, in order: ``gen_ai.agent.name`` (GenAI), ``agent.name`` (OpenInference),
    ``agent_name`` (pydantic-ai before 1.0), ``traceloop.entity.name`` (Traceloop agents);
    ``gen_ai.workflow.name`` for workflows.
    """
    get = attributes.get
    if kind == KIND_WORKFLOW:
        value = get(WORKFLOW_NAME)
        if value is None:
            value = get(TRACELOOP_ENTITY_NAME)
    else:
        value = get(AGENT_NAME)
        if value is None:
            value = get(OI_AGENT_NAME)
            if value is None:
                value = get(PYDANTIC_AGENT_NAME)
                if value is None:
                    value = _first(get, TRACELOOP_ENTITY_NAME, TRACELOOP_LC_AGENT)
                    if value is None:
                        value = _lc_agent(get(OI_METADATA))
    if value is not None and value != "":
        return value, True
    return name_from_span_name(name), False


class Record(NamedTuple):
    """What one ended span says, in the GenAI meaning whatever convention it was written in.

    Token counts: ``input`` includes cache reads and writes, ``output`` includes reasoning;
    ints or None (absent), coerced by the rules above; ``drops`` lists the (field, reason)
    of values that could not be used. ``named`` is False when an agent or workflow name came
    from the span name (see :func:`run_name`). ``usage_only`` marks a span that only carries
    the usage of a call another span reported (Logfire's log span at the end of a stream);
    ``awaits_usage`` a streamed call whose usage such a span will bring. ``main_agent``:
    ``gen_ai.main_agent.name`` of a call or tool (the agent of a call no agent span encloses);
    ``agent_id``: ``gen_ai.agent.id`` of a run (identity only, never a label); ``tool_decision``:
    ``gen_ai.tool.call.decision`` set on a tool span; ``signals``: set by the processor from
    the span's events (:func:`signals_of`).
    """

    kind: int
    operation: str | None
    agent: object  # raw attribute value (labels are made from it by the state)
    named: bool
    model: object
    response_model: object
    provider: object
    tool: object
    tool_type: object
    error_type: str | None
    conversation: object
    response_id: object
    input: int | None
    output: int | None
    cache_read: int | None
    cache_write: int | None
    reasoning: int | None
    drops: list | None
    time_to_first_chunk: float | None
    usage_only: bool = False
    awaits_usage: bool = False
    ends_conversation: bool = False  # spanmeter's own runs: the last turn (AgentRun.end_conversation())
    escalated: bool = False
    # --- 2026 conventions (h-attrs) ---
    main_agent: object = None  # gen_ai.main_agent.name of a call or tool (raw; see spanmeter.events)
    agent_id: object = None  # gen_ai.agent.id (never a label; kept short by key())
    tool_decision: object = None  # gen_ai.tool.call.decision written as a tool span attribute
    signals: tuple | None = None  # (event name, attributes) of the span's evaluation/decision events
    # --- read from the current GenAI conventions (semantic-conventions-genai, issue 14) ---
    #: ``gen_ai.response.finish_reasons`` as the span wrote them (raw values, at most
    #: :data:`MAX_FINISH_REASONS`); labels are made from them by the state.
    finish_reasons: tuple | None = None
    #: ``gen_ai.usage.{text,image,audio}.{input,output,cache_read.input}_tokens`` in
    #: :data:`MODALITY_TOKEN_ATTRIBUTES` order (None when the span has none of them).
    modality_tokens: tuple | None = None

    @property
    def tokens(self) -> tuple:
        """(input, output, cache_read, cache_write, reasoning)."""
        return self[TOKENS]  # type: ignore[return-value]  # a slice (a tuple): half the cost of five field reads


RECORD_FIELDS = Record._fields
#: Where :attr:`Record.tokens` are among a record's fields (``record[TOKENS]`` on a hot path).
TOKENS = slice(RECORD_FIELDS.index("input"), RECORD_FIELDS.index("reasoning") + 1)
assert RECORD_FIELDS[TOKENS] == ("input", "output", "cache_read", "cache_write", "reasoning")
_new_record = tuple.__new__  # a Record from a tuple of all its fields (hot path)
_TOKEN_FIELDS = tuple(f"{t}_tokens" for t in TOKEN_TYPES)


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


def _usage(tokens: tuple, excludes_cache: bool = False) -> tuple[tuple, list | None]:
    """Token counts coerced by the rules above, input made to include its cached part, and drops.

    The input is taken to exclude cache reads and writes when the source says so
    (``excludes_cache``) or when it is smaller than they are.
    """
    drops = None
    for t in tokens:  # a loop, not any(genexpr): this runs for every inference span
        if t is not None and not (t.__class__ is int and 0 <= t <= MAX_TOKENS):
            tokens, drops = coerce_tokens(tokens)
            break
    i, o, cr, cw, rs = tokens
    if i is not None and (cr or cw) and (excludes_cache or i < (cr or 0) + (cw or 0)):
        i += (cr or 0) + (cw or 0)
    return (i, o, cr, cw, rs), drops


def _first(get, *keys):
    for key in keys:
        value = get(key)
        if value is not None:
            return value
    return None


#: Keys an inference span (``gen_ai.operation.name`` set) is read for only in rare cases:
#: older names and fallbacks, other libraries' fields, modality splits, costs, main agent.
#: A span with none of them is read without looking each up (see :func:`_read_inference`);
#: every key :func:`_read_inference` reads beyond the common ones must be listed here.
_RARE_INFERENCE_KEYS = frozenset((
    PROMPT_TOKENS_OLD, COMPLETION_TOKENS_OLD, CACHE_READ_TOKENS_OLD, CACHE_WRITE_TOKENS_NEXT,
    CACHE_WRITE_TOKENS_OLD, REASONING_TOKENS_FLAT, REASONING_TOKENS_DETAILS, THOUGHTS_TOKENS_DETAILS, USAGE_RAW,
    SYSTEM, TELEMETRY_SDK_NAME, LOGFIRE_SPAN_TYPE, PYDANTIC_AGENT_NAME, TRACELOOP_LC_AGENT, COST_AMOUNT,
    COST_CURRENCY, MAIN_AGENT_NAME, MAIN_AGENT_NAME_MS, RESPONSE_FINISH_REASON_SINGULAR, *MODALITY_TOKEN_ATTRIBUTES,
))  # fmt: skip


def read(attributes, kind: int, failed: bool, name: str = "") -> Record:
    """The :class:`Record` of a span of ``kind`` (from :func:`kind_of`).

    Every convention's fields are read with the GenAI meaning: OpenInference's
    ``llm.token_count.prompt`` is input with its cached part, as GenAI's input is; OpenLIT's
    Anthropic input excludes the cache (the provider's meaning) and gets it added; input
    smaller than its cache reads and writes is taken to exclude them, from any source.
    """
    get = attributes.get
    op = get(OPERATION_NAME)
    if op.__class__ is not str and get(OI_SPAN_KIND).__class__ is str:
        return _read_openinference(get, attributes, kind, failed, name)
    error_type = get(ERROR_TYPE)
    if error_type is None:  # the common case, without _error_type's call
        error_type, edrop = (ERROR_OTHER if failed else None), None
    else:
        error_type, edrop = _error_type(error_type, failed)
    if op.__class__ is not str:  # Traceloop kinds, old OpenLLMetry, old pydantic-ai
        op = LLM_REQUEST_TYPES.get(get(LLM_REQUEST_TYPE)) if kind == KIND_INFERENCE else None
        op = op or _OPERATION_OF_KIND[kind]
    if kind == KIND_INFERENCE:
        return _read_inference(get, op, error_type, edrop, not _RARE_INFERENCE_KEYS.isdisjoint(attributes))
    if kind == KIND_TOOL:
        tool = get(TOOL_NAME)
        if tool is None:
            tool = get(TRACELOOP_ENTITY_NAME)
        agent = _first(get, AGENT_NAME, PYDANTIC_AGENT_NAME, TRACELOOP_LC_AGENT)
        return Record(kind, op, agent, agent is not None, None, None, None, tool, get(TOOL_TYPE), error_type,
                      None, None, None, None, None, None, None, _with(None, edrop), None, False, False, False, False,
                      _main_agent(get), None, get(TOOL_CALL_DECISION))  # fmt: skip
    agent, named = run_name(attributes, kind, name)
    conversation = get(CONVERSATION_ID)
    if conversation is None:
        conversation = get(SESSION_ID)
    return Record(kind, op, agent, named, None, None, None, None, None, error_type,
                  conversation, None, None, None, None, None, None, _with(None, edrop), None, False, False,
                  get(CONVERSATION_ENDED) is True, get(CONVERSATION_ESCALATED) is True, None,
                  key(get(AGENT_ID)))  # fmt: skip


def _read_inference(get, op, error_type, edrop, rare: bool = True) -> Record:
    # ``rare`` is False when the span has none of _RARE_INFERENCE_KEYS: every lookup of
    # one would give None, so they are skipped (one set test instead of ~30 lookups).
    response_model = get(RESPONSE_MODEL)
    i = get(INPUT_TOKENS)
    o = get(OUTPUT_TOKENS)
    cr = get(CACHE_READ_TOKENS)
    cw = get(CACHE_WRITE_TOKENS)
    rs = get(REASONING_TOKENS)
    provider = get(PROVIDER_NAME)
    if rare:
        if i is None:
            i = get(PROMPT_TOKENS_OLD)
        if o is None:
            o = get(COMPLETION_TOKENS_OLD)
        if cr is None:
            cr = get(CACHE_READ_TOKENS_OLD)
        if cw is None:
            cw = get(CACHE_WRITE_TOKENS_NEXT)
            if cw is None:
                cw = get(CACHE_WRITE_TOKENS_OLD)
        if rs is None:
            rs = _first(get, REASONING_TOKENS_FLAT, REASONING_TOKENS_DETAILS, THOUGHTS_TOKENS_DETAILS)
            if rs is None:
                raw = get(USAGE_RAW)
                if raw is not None:
                    rs = _raw_reasoning(raw)
        provider = provider or get(SYSTEM)
        (i, o, cr, cw, rs), drops = _usage((i, o, cr, cw, rs), _excludes_cache(get, provider))
    else:
        provider = provider or None
        drops = None
        for t in (i, o, cr, cw, rs):  # _usage's test, inlined: most spans' counts are plain ints
            if t is not None and not (t.__class__ is int and 0 <= t <= MAX_TOKENS):
                (i, o, cr, cw, rs), drops = _usage((i, o, cr, cw, rs))
                break
        else:
            if i is not None and (cr or cw) and i < (cr or 0) + (cw or 0):
                i += (cr or 0) + (cw or 0)
    if edrop is not None:
        drops = (drops or []) + [edrop]
    ttfc = get(TIME_TO_FIRST_CHUNK)
    if ttfc is not None and not (ttfc.__class__ in (int, float) and 0 <= ttfc < 1e6):
        drops = (drops or []) + [("time_to_first_chunk", "out_of_range")]
        ttfc = None
    agent = get(AGENT_NAME)
    reasons = get(RESPONSE_FINISH_REASONS)
    if not rare:  # every field, in order: tuple.__new__ skips Record.__new__'s frame (0.2 us of 1)
        return _new_record(Record, (KIND_INFERENCE, op, agent, agent is not None, get(REQUEST_MODEL) or response_model,
                                    response_model, provider, None, None, error_type, None, get(RESPONSE_ID), i, o,
                                    cr, cw, rs, drops, ttfc, False, False, False, False, None, None, None, None,
                                    None if reasons is None else finish_reasons(get), None))  # fmt: skip
    usage_only = awaits = False
    span_type = get(LOGFIRE_SPAN_TYPE)
    if span_type is not None:  # Logfire: a stream is a usage-less span, then a log span with the usage
        has_usage = i is not None or o is not None
        usage_only = span_type == "log" and has_usage
        # a streamed call's span has no usage, no response id and no error (others have some)
        awaits = (span_type == "span" and not has_usage and get(RESPONSE_ID) is None and error_type is None
                  and (get(REQUEST_STREAM) is not False))  # fmt: skip
    if agent is None:
        agent = _first(get, PYDANTIC_AGENT_NAME, TRACELOOP_LC_AGENT)
    modality, mdrops = modality_usage(get)
    if mdrops:
        drops = (drops or []) + mdrops
    if get(COST_AMOUNT) is not None or get(COST_CURRENCY) is not None:
        drops = _with(drops, cost_of(get)[1])
    main_agent = get(MAIN_AGENT_NAME)
    if main_agent is None:
        main_agent = get(MAIN_AGENT_NAME_MS)
    return Record(KIND_INFERENCE, op, agent, agent is not None, get(REQUEST_MODEL) or response_model,
                  response_model, provider, None, None, error_type, None, get(RESPONSE_ID), i, o, cr, cw, rs,
                  drops, ttfc, usage_only, awaits, False, False, main_agent, None, None, None,
                  finish_reasons(get), modality)  # fmt: skip


def finish_reasons(get) -> tuple | None:
    """``gen_ai.response.finish_reasons`` (or the singular some libraries write) as a tuple
    of raw values, at most :data:`MAX_FINISH_REASONS`; None when absent or empty."""
    reasons = get(RESPONSE_FINISH_REASONS)
    if reasons is None:
        reasons = get(RESPONSE_FINISH_REASON_SINGULAR)
        if reasons is None:
            return None
    if reasons.__class__ is str:
        return (reasons,) if reasons else None
    if isinstance(reasons, (tuple, list)):
        return tuple(reasons[:MAX_FINISH_REASONS]) or None
    return (reasons,)  # another type: the state's label rule makes it "unknown" (wrong_type)


def modality_usage(get) -> tuple[tuple | None, list | None]:
    """(the span's ``gen_ai.usage.<modality>.*`` token counts in
    :data:`MODALITY_TOKEN_ATTRIBUTES` order, drops); (None, None) when it has none.

    Counts follow the token rules above; a dropped one is None.
    """
    values = [get(key) for key in MODALITY_TOKEN_ATTRIBUTES]
    if values.count(None) == len(values):
        return None, None
    drops = None
    for n, value in enumerate(values):
        if value is not None and not (value.__class__ is int and 0 <= value <= MAX_TOKENS):
            values[n], reason = coerce_count(value)
            if reason is not None:
                drops = (drops or []) + [(MODALITY_TOKEN_ATTRIBUTES[n][len("gen_ai.usage."):], reason)]
    return tuple(values), drops



def _main_agent(get):
    value = get(MAIN_AGENT_NAME)
    return get(MAIN_AGENT_NAME_MS) if value is None else value


def cost_of(get) -> tuple[float | None, tuple | None]:
    """(US dollars, None) of a cost the span carries, or (None, a (field, reason) drop or None).

    ``gen_ai.usage.cost.amount`` is used when ``gen_ai.usage.cost.currency`` is ``USD``; in
    another currency, or without one, it is not (drop ``cost`` ``currency_not_usd`` /
    ``currency_missing``) and the call is priced as if it carried no cost. Then the older
    dollar attributes (:data:`LEGACY_COST_ATTRIBUTES`), unless a currency other than USD is
    given for them. A cost must be a finite number in [0, 1e9) (else ``out_of_range`` /
    ``wrong_type``).
    """
    amount = get(COST_AMOUNT)
    if amount is not None:
        currency = get(COST_CURRENCY)
        if currency.__class__ is not str or currency.upper() != "USD":
            return None, ("cost", "currency_missing" if currency is None else "currency_not_usd")
        return _dollars(amount)
    for name in LEGACY_COST_ATTRIBUTES:  # the common case: none of them, three lookups
        amount = get(name)
        if amount is not None:
            currency = get(COST_CURRENCY)  # OpenLIT writes gen_ai.usage.cost.currency too
            if currency is not None and (currency.__class__ is not str or currency.upper() != "USD"):
                return None, ("cost", "currency_not_usd")
            return _dollars(amount)
    return _NO_COST


_NO_COST = (None, None)


def _dollars(amount) -> tuple[float | None, tuple | None]:
    if amount.__class__ not in (int, float):
        return None, ("cost", "wrong_type")
    if not (math.isfinite(amount) and 0 <= amount < 1e9):
        return None, ("cost", "out_of_range")
    return float(amount), None


def signals_of(events) -> tuple | None:
    """(event name, attributes) of a span's ``gen_ai.evaluation.result`` and
    ``gen_ai.tool.call.decision`` events, or None when it has none."""
    out: list | None = None
    for event in events:
        name = getattr(event, "name", None)
        if name == EVALUATION_RESULT or name == TOOL_CALL_DECISION:
            if out is None:
                out = []
            out.append((name, event.attributes or {}))
    return tuple(out) if out else None


def evaluation_of(attributes) -> tuple[object, float | None, str | None]:
    """(evaluation name, score in 0..1 or None, drop reason or None) of an evaluation result.

    The score is ``gen_ai.evaluation.score.value``: a number in [0, 1] (a numeric string is
    read); absent (a label-only verdict: ``absent``), another type (``wrong_type``, ``bool_value``,
    ``not_a_number``), NaN or outside [0, 1] (``out_of_range``) gives no score.
    """
    get = attributes.get
    name = get(EVALUATION_NAME)
    score = get(EVALUATION_SCORE_VALUE)
    if name is None or name == "":
        return None, None, "no_name"
    if score is None:
        return name, None, "absent"
    if score.__class__ is bool:
        return name, None, "bool_value"
    if score.__class__ is str:
        try:
            score = float(score)
        except ValueError:
            return name, None, "not_a_number"
    elif not isinstance(score, (int, float)):
        return name, None, "wrong_type"
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        return name, None, "out_of_range"
    return name, float(score), None


def decision_of(value) -> tuple[str | None, str | None]:
    """(``allow`` | ``deny`` | ``require_approval``, None), or (None, drop reason) for any other value."""
    if value.__class__ is not str:
        return None, "wrong_type"
    value = value.strip().lower()
    if value in DECISIONS:
        return value, None
    return None, "unknown_value"


_LC_AGENT = re.compile(r'"lc_agent_name"\s*:\s*"([^"\\]{1,128})"')


def _lc_agent(metadata):
    """LangChain's ``lc_agent_name`` inside OpenInference's ``metadata`` JSON text, or None."""
    if metadata.__class__ is not str or "lc_agent_name" not in metadata:
        return None
    match = _LC_AGENT.search(metadata)
    return match.group(1) if match else None


def _raw_reasoning(raw):
    """Reasoning tokens inside a provider usage object written as JSON text (Logfire)."""
    if raw.__class__ is not str or "reasoning_tokens" not in raw or len(raw) > 100_000:
        return None
    try:
        usage = json.loads(raw)
    except ValueError:
        return None
    if usage.__class__ is not dict:
        return None
    for key in ("completion_tokens_details", "output_tokens_details"):
        details = usage.get(key)
        if details.__class__ is dict and details.get("reasoning_tokens") is not None:
            return details["reasoning_tokens"]
    return None


def _excludes_cache(get, provider) -> bool:
    # OpenLIT writes Anthropic's own input_tokens, which leave cache reads and writes out.
    return get(TELEMETRY_SDK_NAME) == "openlit" and provider == "anthropic"


def _read_openinference(get, attributes, kind: int, failed: bool, name: str) -> Record:
    error_type, edrop = _error_type(get(ERROR_TYPE), failed)
    conversation = get(SESSION_ID)
    if kind == KIND_INFERENCE:
        response_model = get(OI_RESPONSE_MODEL) or get(OI_MODEL)
        model = get(OI_REQUEST_MODEL) or _invocation_model(get(OI_INVOCATION_PARAMETERS)) or response_model
        provider = get(OI_PROVIDER) or get(OI_SYSTEM)
        model, response_model = _unprefixed(model, provider), _unprefixed(response_model, provider)
        (i, o, cr, cw, rs), drops = _usage((get(OI_PROMPT_TOKENS), get(OI_COMPLETION_TOKENS),
                                            get(OI_CACHE_READ_TOKENS), get(OI_CACHE_WRITE_TOKENS),
                                            get(OI_REASONING_TOKENS)))  # fmt: skip
        drops = _with(drops, edrop)
        op = "embeddings" if get(OI_SPAN_KIND) == "EMBEDDING" else OP_CHAT
        agent = get(OI_AGENT_NAME)
        if agent is None:
            agent = _lc_agent(get(OI_METADATA))
        modality, mdrops = _oi_modality_usage(get)
        if mdrops:
            drops = (drops or []) + mdrops
        return Record(kind, op, agent, agent is not None, model, response_model, provider, None, None, error_type, conversation, _output_id(get(OI_OUTPUT_VALUE)), i, o, cr, cw, rs,
                      drops, None, modality_tokens=modality)  # fmt: skip
    if kind == KIND_TOOL:
        tool = get(OI_TOOL_NAME)
        if tool is None:
            tool = name_from_span_name(name)
        agent = get(OI_AGENT_NAME)
        if agent is None:
            agent = _lc_agent(get(OI_METADATA))
        return Record(kind, OP_EXECUTE_TOOL, agent, agent is not None, None, None, None, tool, None, error_type,
                      conversation, None, None, None, None, None, None, _with(None, edrop), None)  # fmt: skip
    agent, named = run_name(attributes, kind, name)
    return Record(kind, _OPERATION_OF_KIND[kind], agent, named, None, None, None, None, None, error_type,
                  conversation, None, None, None, None, None, None, _with(None, edrop), None)  # fmt: skip


def _oi_modality_usage(get) -> tuple[tuple | None, list | None]:
    """OpenInference's audio token details as a :data:`MODALITY_TOKEN_ATTRIBUTES` tuple (its
    only modality split), and drops; (None, None) when absent."""
    audio_in, audio_out = get(OI_AUDIO_PROMPT_TOKENS), get(OI_AUDIO_COMPLETION_TOKENS)
    if audio_in is None and audio_out is None:
        return None, None
    values = {"gen_ai.usage.audio.input_tokens": audio_in, "gen_ai.usage.audio.output_tokens": audio_out}
    return modality_usage(values.get)


def content_of(attributes) -> tuple:
    """(question, answer) an agent span recorded (GenAI messages or OpenInference values)."""
    get = attributes.get
    return get(INPUT_MESSAGES) or get(OI_INPUT_VALUE), get(OUTPUT_MESSAGES) or get(OI_OUTPUT_VALUE)


def _unprefixed(model, provider):
    """``openai/gpt-4o`` -> ``gpt-4o`` when the prefix is the span's provider (litellm's names)."""
    if model.__class__ is str and provider.__class__ is str and provider and model[: len(provider) + 1].lower() == (
            provider.lower() + "/"):  # fmt: skip
        return model[len(provider) + 1 :] or model
    return model


def _invocation_model(parameters):
    """The ``model`` of OpenInference's ``llm.invocation_parameters`` JSON text, if any."""
    if parameters.__class__ is not str or len(parameters) > 20_000 or '"model"' not in parameters:
        return None
    try:
        model = json.loads(parameters).get("model")
    except (ValueError, AttributeError):
        return None
    return model if model.__class__ is str else None


_OUTPUT_ID = re.compile(r'"id"\s*:\s*"((?:chatcmpl|resp|msg|gen)[-_][A-Za-z0-9_-]{1,120})"')


def _output_id(output):
    """The provider's response id inside OpenInference's ``output.value`` (the raw response
    as JSON text), or None. OpenInference writes no ``gen_ai.response.id``; the id is what
    tells its span and another instrumentation's span of the same call apart from others."""
    if output.__class__ is not str or len(output) > 1_000_000:
        return None
    match = _OUTPUT_ID.search(output, 0, 4096)  # the response's own id comes first
    return match.group(1) if match else None


_ERROR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*|[1-5][0-9][0-9]")


def _error_type(error_type, failed: bool):
    """(``error.type`` label or None, drop or None) of a span."""
    if error_type is None or error_type == "":
        return (ERROR_OTHER if failed else None), None
    if error_type.__class__ is str and error_type.startswith("<class '") and error_type.endswith("'>"):
        error_type = error_type[8:-2]  # str() of a class
    label, reason = error_label(error_type)
    return label, (None if reason is None else ("error_type", reason))


def _with(drops, drop):
    return drops if drop is None else (drops or []) + [drop]


def error_label(error_type) -> tuple[str, str | None]:
    """(``error.type`` label, drop reason or None) by the rule above."""
    if error_type.__class__ is not str:
        if isinstance(error_type, int) and not isinstance(error_type, bool) and 100 <= error_type <= 599:
            return str(error_type), None
        return ERROR_OTHER, "wrong_type"
    if len(error_type) <= MAX_LABEL_LENGTH and _ERROR_NAME.fullmatch(error_type):
        return error_type, None
    return ERROR_OTHER, "free_text"


def key(value):
    """``value`` as kept in memory: long strings become a hash of them (bounded memory)."""
    if value.__class__ is str and len(value) > MAX_KEY_LENGTH:
        return hash(value)
    return value


def exception_type(events) -> str | None:
    """``exception.type`` of a span's last exception event (OpenInference has no error.type)."""
    for event in reversed(events or ()):
        if getattr(event, "name", None) == "exception":
            value = (event.attributes or {}).get("exception.type")
            if value.__class__ is str and value:
                return value
    return None


def is_timeout(error_type: str) -> bool:
    """The rule that tells a timeout from other failures: ``error.type`` names one."""
    return "timeout" in error_type.lower()


def status_of(error_type: str | None) -> str:
    """Status label of an operation from its ``error.type``: success, timeout or error."""
    if error_type is None:
        return STATUS_SUCCESS
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
    label, _ = error_label(error_type)
    if label == ERROR_OTHER and error_type.__class__ is str and is_timeout(error_type):
        return STATUS_TIMEOUT, label  # free text that says timeout is still a timeout
    return status_of(label), label


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
