"""Prices: from the span, from the user's overrides, or from the genai-prices catalogue.

Precedence for each inference span (the first that applies prices it):

1. a cost already on the span: the GenAI ``gen_ai.usage.cost.amount`` when
   ``gen_ai.usage.cost.currency`` is ``USD``; else OpenInference ``llm.cost.total``, OpenLIT
   ``gen_ai.usage.cost``, pydantic-ai ``operation.cost`` (dollars). A cost in another currency
   (or without one) is not used (:func:`spanmeter.conventions.cost_of` counts it as a drop):
   the call is priced by the next rules, and is unpriced when it has no tokens;
2. the user's overrides (a TOML file or the same structure as a dict): an entry for the
   model and provider, then for the model, then for the provider; the latest entry whose
   ``start_date`` is on or before the span's day;
3. the bundled `genai-prices <https://github.com/pydantic/genai-prices>`_ catalogue
   (offline; refreshed from the network only with ``update=True``), resolving the response
   model (a dated snapshot) before the requested one, with the provider from the span
   (GenAI names such as ``aws.bedrock`` mapped to the catalogue's), from a
   ``provider/model`` prefix, from a Bedrock-style id, or inferred from the model name;
   the price in force on the span's day (UTC) is used;
4. otherwise the call is unpriced: ``agent_unpriced_calls_total`` and
   ``agent_unpriced_tokens_total`` rise and no cost is added. A missing price is never $0.

Usage follows the GenAI meaning: input tokens include cache reads and writes, output
tokens include reasoning. Uncached input = input - cache_read - cache_write (when the cache
counts exceed the input, the input is taken as uncached, as some sources report it).
Cache reads and writes are priced at their own rates, or at the input rate when the
catalogue has none (as genai-prices does); reasoning tokens at the output rate. Tiered
prices apply by total input tokens, as genai-prices does. Only token prices are used
(per-request and per-search prices are not). Prices are kept as integer femto-dollars per
token so sums are exact; a price with more than nine decimals per million tokens is
rounded to the nearest femto-dollar per token.

Resolution is cached per (provider, model, response model, UTC day) (per minute for the
few catalogue models with time-of-day prices), so the catalogue's 50-100 us lookup runs
once per model and day, not per span.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

from spanmeter import conventions as c
from spanmeter.errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

#: Span attributes that already carry a cost, in the order they are read (see
#: :func:`spanmeter.conventions.cost_of`).
SPAN_COST_ATTRIBUTES = (c.COST_AMOUNT,) + c.LEGACY_COST_ATTRIBUTES
#: Where a price came from (the ``source`` label of ``spanmeter_priced_calls_total``).
SOURCE_SPAN, SOURCE_OVERRIDE, SOURCE_CATALOGUE = "span", "override", "catalogue"
_PRICED_SOURCES = (SOURCE_OVERRIDE, SOURCE_CATALOGUE)
_cost_of = c.cost_of
_COST_AMOUNT = c.COST_AMOUNT
_LEGACY_1, _LEGACY_2, _LEGACY_3 = c.LEGACY_COST_ATTRIBUTES  # price() tests each without a loop
#: Returned by :meth:`Pricer.price` for a call with tokens but no known price.
UNPRICED = "unpriced"
PRICE_TYPES = ("input", "output", "cache_read", "cache_write")
FEMTO = 10**15
_PER_MILLION_TO_FEMTO_PER_TOKEN = Decimal(10**9)
_NS_PER_DAY = 86_400 * 10**9
_NS_PER_MINUTE = 60 * 10**9
_CACHE_LIMIT = 10_000
_PER_MINUTE = "per-minute"
_log = logging.getLogger("spanmeter")
# GenAI ``gen_ai.provider.name`` values the catalogue's own matching does not know.
_PROVIDER_ALIASES = {"x_ai": "x-ai", "gcp.gen_ai": "google", "azure.ai.inference": "azure"}
_BEDROCK_REGIONS = ("us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.")
_BEDROCK_VENDORS = ("anthropic.", "amazon.", "meta.", "mistral.", "cohere.", "ai21.", "deepseek.", "writer.", "qwen.")


def femto_per_token(per_million) -> int:
    """A price in dollars per million tokens as integer femto-dollars per token."""
    value = Decimal(str(per_million)) * _PER_MILLION_TO_FEMTO_PER_TOKEN
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True)
class Rate:
    """One token type's price: femto-dollars per token, with optional input-size tiers."""

    base: int
    tiers: tuple[tuple[int, int], ...] = ()  # (more than this many input tokens, price), ascending

    def at(self, total_input: int) -> int:
        price = self.base
        for start, tier_price in self.tiers:
            if total_input > start:
                price = tier_price
        return price


@dataclass(frozen=True)
class Rates:
    """Prices of one model for every token type, and where they came from."""

    input: Rate
    output: Rate
    cache_read: Rate
    cache_write: Rate
    source: str
    origin: str  # human-readable: catalogue entry or override file entry

    def __post_init__(self):
        flat = not (self.input.tiers or self.output.tiers or self.cache_read.tiers or self.cache_write.tiers)
        object.__setattr__(
            self, "flat",
            (self.input.base, self.output.base, self.cache_read.base, self.cache_write.base) if flat else None,
        )  # fmt: skip

    def cost(self, i, o, cr, cw) -> int:
        """Cost in femto-dollars of a call's tokens (None counts as 0)."""
        i = i or 0
        cr = cr or 0
        cw = cw or 0
        uncached = i - cr - cw
        total_input = i
        if uncached < 0:  # the source reported input without its cached part
            uncached = i
            total_input = i + cr + cw
        flat = self.flat
        if flat is not None:  # the common case, without tiers
            return uncached * flat[0] + (o or 0) * flat[1] + cr * flat[2] + cw * flat[3]
        return (
            uncached * self.input.at(total_input)
            + cr * self.cache_read.at(total_input)
            + cw * self.cache_write.at(total_input)
            + (o or 0) * self.output.at(total_input)
        )

    def per_million(self) -> dict[str, str]:
        """Base prices in dollars per million tokens (and their tiers), for display."""
        out = {}
        for name in PRICE_TYPES:
            rate: Rate = getattr(self, name)
            text = _dollars_per_million(rate.base)
            if rate.tiers:
                tiers = ", ".join(f"{_dollars_per_million(p)} above {start:,} input tokens" for start, p in rate.tiers)
                text += f" ({tiers})"
            out[name] = text
        return out


def _dollars_per_million(femto: int) -> str:
    text = f"{Decimal(femto) / _PER_MILLION_TO_FEMTO_PER_TOKEN:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# --- overrides -----------------------------------------------------------------------------
_OVERRIDE_KEYS = {"model", "provider", "input", "output", "cache_read", "cache_write", "start_date"}


@dataclass(frozen=True)
class PriceOverride:
    """One entry of the user's price overrides (dollars per million tokens)."""

    model: str | None
    provider: str | None
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    start_date: dt.date | None
    origin: str

    def rates(self) -> Rates:
        return Rates(
            input=Rate(femto_per_token(self.input)),
            output=Rate(femto_per_token(self.output)),
            cache_read=Rate(femto_per_token(self.cache_read)),
            cache_write=Rate(femto_per_token(self.cache_write)),
            source=SOURCE_OVERRIDE,
            origin=self.origin,
        )


def _price(value, where: str, key: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ConfigurationError(f"{where}: {key} must be a number of dollars per million tokens, got {value!r}")
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise ConfigurationError(
            f"{where}: {key} must be a number of dollars per million tokens, got {value!r}"
        ) from None
    if not price.is_finite():
        raise ConfigurationError(f"{where}: {key} must be a finite number, got {value!r}")
    if price < 0:
        raise ConfigurationError(f"{where}: {key} is negative ({value!r}); prices are >= 0 (use 0 for free models)")
    return price


def _date(value, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigurationError(f"{where}: start_date must be a date like 2026-01-31, got {value!r}")


def parse_overrides(data, origin: str = "prices") -> tuple[PriceOverride, ...]:
    """Validate the override structure ``{"price": [{...}, ...]}`` (a TOML file's content).

    Raises :class:`ConfigurationError` naming ``origin``, the entry and the fix.
    """
    if not isinstance(data, dict):
        raise ConfigurationError(f"{origin}: expected a table with a 'price' array, got {type(data).__name__}")
    extra = set(data) - {"price"}
    if extra:
        raise ConfigurationError(
            f"{origin}: unknown top-level key(s) {sorted(extra)}; write each price as a [[price]] entry"
        )
    entries = data.get("price", [])
    if not isinstance(entries, list):
        raise ConfigurationError(f"{origin}: 'price' must be an array of tables ([[price]] entries)")
    out = []
    for n, entry in enumerate(entries, start=1):
        label = f"{origin}: price entry {n}"
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{label}: expected a table, got {entry!r}")
        name = entry.get("model") or entry.get("provider")
        if isinstance(name, str):
            label += f" ({'model' if entry.get('model') else 'provider'} {name!r})"
        unknown = set(entry) - _OVERRIDE_KEYS
        if unknown:
            raise ConfigurationError(
                f"{label}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_OVERRIDE_KEYS)}"
            )
        model, provider = entry.get("model"), entry.get("provider")
        for key, value in (("model", model), ("provider", provider)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigurationError(f"{label}: {key} must be a non-empty string, got {value!r}")
        if model is None and provider is None:
            raise ConfigurationError(f"{label}: give a model, a provider, or both")
        if "input" not in entry or "output" not in entry:
            raise ConfigurationError(
                f"{label}: input and output prices are required (dollars per million tokens; 0 for free models)"
            )
        input_price = _price(entry["input"], label, "input")
        out.append(
            PriceOverride(
                model=model.strip().lower() if model else None,
                provider=provider.strip().lower() if provider else None,
                input=input_price,
                output=_price(entry["output"], label, "output"),
                cache_read=_price(entry.get("cache_read", input_price), label, "cache_read"),
                cache_write=_price(entry.get("cache_write", input_price), label, "cache_write"),
                start_date=_date(entry["start_date"], label) if "start_date" in entry else None,
                origin=label,
            )
        )
    return tuple(out)


def load_overrides(source) -> tuple[PriceOverride, ...]:
    """Overrides from a TOML file path, or from a dict of the same structure."""
    if source is None:
        return ()
    if isinstance(source, dict):
        return parse_overrides(source, "prices dict")
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the price file ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML ({exc})") from None
    return parse_overrides(data, str(path))


# --- the catalogue -------------------------------------------------------------------------
def _catalogue():
    from genai_prices import data_snapshot

    return data_snapshot


def catalogue_version() -> str:
    """``genai-prices`` version of the bundled data, or the time of the last auto-update."""
    from importlib.metadata import version

    snapshot = _catalogue().get_snapshot()
    if snapshot.from_auto_update:
        return f"auto-update {snapshot.timestamp.isoformat(timespec='seconds')}"
    return version("genai-prices")


def _rate(model_price, key: str, fallback: Rate | None) -> Rate | None:
    from genai_prices.types import TieredPrices

    value = getattr(model_price, key, None)
    if value is None:
        return fallback
    if isinstance(value, TieredPrices):
        tiers = tuple(sorted((t.start, femto_per_token(t.price)) for t in value.tiers))
        return Rate(femto_per_token(value.base), tiers)
    return Rate(femto_per_token(value))


def _candidates(provider: str | None, model: str) -> list[tuple[str | None, str]]:
    """(provider id or None, model) pairs to look up in the catalogue, most specific first."""
    model = model.strip().lower()
    provider = provider.strip().lower() if provider else None
    provider = _PROVIDER_ALIASES.get(provider, provider)
    out = [(provider, model)]
    if "/" in model:  # openai/gpt-4o, anthropic/claude-...
        prefix, _, rest = model.partition("/")
        out += [(prefix, rest), (provider, rest)]
    if model.startswith(_BEDROCK_REGIONS + _BEDROCK_VENDORS):
        out.append(("aws", model))
    if provider is not None:
        out.append((None, model))
    seen, unique = set(), []
    for pair in out:
        if pair not in seen:
            seen.add(pair)
            unique.append(pair)
    return unique


def catalogue_rates(provider: str | None, model: str, when: dt.datetime) -> tuple[Rates | None, bool]:
    """(rates or None, whether the price depends on the time of day) from the catalogue."""
    from genai_prices.types import ConditionalPrice, TimeOfDateConstraint

    snapshot = _catalogue().get_snapshot()
    for provider_id, ref in _candidates(provider, model):
        try:
            found_provider, info = snapshot.find_provider_model(ref, None, provider_id, None)
        except LookupError:
            continue
        prices = info.get_prices(when)
        input_rate = _rate(prices, "input_mtok", None)
        output_rate = _rate(prices, "output_mtok", None)
        if input_rate is None or output_rate is None:
            continue  # priced per request or per second, not per token
        time_of_day = isinstance(info.prices, list) and any(
            isinstance(p, ConditionalPrice) and isinstance(p.constraint, TimeOfDateConstraint) for p in info.prices
        )
        rates = Rates(
            input=input_rate,
            output=output_rate,
            cache_read=_rate(prices, "cache_read_mtok", input_rate),
            cache_write=_rate(prices, "cache_write_mtok", input_rate),
            source=SOURCE_CATALOGUE,
            origin=f"genai-prices {catalogue_version()}: {found_provider.id}/{info.id}",
        )
        return rates, time_of_day
    return None, False


def span_cost(attributes) -> int | None:
    """A cost in femto-dollars carried by the span itself, if any usable one is."""
    dollars, _ = c.cost_of(attributes.get)
    return None if dollars is None else round(dollars * FEMTO)


def cost_attributes(priced) -> dict:
    """The span attributes of a price (:meth:`Pricer.price`'s (femto-dollars, source)):
    ``gen_ai.usage.cost.amount`` (US dollars), ``.currency`` ``USD``, ``.source``
    (``local``: spanmeter computed it; ``provider`` is never claimed), and spanmeter's own
    :data:`~spanmeter.conventions.PRICE_SOURCE`. Empty for None or :data:`UNPRICED`."""
    if priced is None or priced is UNPRICED:
        return {}
    femto, source = priced
    return {c.COST_AMOUNT: femto / FEMTO, c.COST_CURRENCY: "USD", c.COST_SOURCE: c.COST_SOURCE_LOCAL,
            c.PRICE_SOURCE: source}  # fmt: skip


@dataclass
class Pricer:
    """Prices inference spans (see the module docstring for the rules).

    Build with :meth:`create`; call :meth:`price` per span. Thread-safe.
    """

    overrides: tuple[PriceOverride, ...] = ()
    catalogue: bool = True
    _cache: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _snapshot: object = field(default=None, repr=False)
    _checked: float = field(default=0.0, repr=False)
    _updater: object = field(default=None, repr=False)
    on_refresh: object = field(default=None, repr=False)  # called after the catalogue changed

    @classmethod
    def create(cls, prices=None, *, catalogue: bool = True, update: bool = False, update_url: str | None = None):
        """A pricer with overrides from ``prices`` (TOML path or dict), validated now.

        ``update=True`` starts genai-prices' background refresh of the catalogue (hourly,
        from ``update_url`` or its default GitHub URL); nothing is fetched otherwise.
        """
        pricer = cls(overrides=load_overrides(prices), catalogue=catalogue)
        ref = weakref.ref(pricer)  # a forked child must not inherit the lock held by a parent thread
        os.register_at_fork(after_in_child=lambda: (p := ref()) is not None and setattr(p, "_lock", threading.Lock()))
        if catalogue:
            pricer._snapshot = _catalogue().get_snapshot()
        if update:
            if not catalogue:
                raise ConfigurationError("update=True needs the catalogue (catalogue=True)")
            from genai_prices import UpdatePrices

            pricer._updater = UpdatePrices(url=update_url) if update_url else UpdatePrices()
            pricer._updater.start()
        return pricer

    def stop(self) -> None:
        if self._updater is not None:
            self._updater.stop()
            self._updater = None

    # --- per span ------------------------------------------------------------------------
    def price(self, provider, model, response_model, tokens, end_ns, attributes):
        """None (nothing to price), :data:`UNPRICED`, or (femto-dollars, source)."""
        get = attributes.get
        if get(_COST_AMOUNT) is None and get(_LEGACY_1) is None and get(_LEGACY_2) is None and get(_LEGACY_3) is None:
            dollars = drop = None  # cost_of's common case, without its call (this runs for every call)
        else:
            dollars, drop = _cost_of(get)
        if dollars is not None:
            # a cost spanmeter itself wrote (its own spans) keeps the source of its price
            source = attributes.get(c.PRICE_SOURCE)
            return round(dollars * FEMTO), (source if source in _PRICED_SOURCES else SOURCE_SPAN)
        i, o, cr, cw, _ = tokens
        if i is None and o is None and cr is None and cw is None:
            return UNPRICED if drop is not None else None  # a cost it could not use: unpriced, not free
        if end_ns.__class__ is not int or not 0 < end_ns < 2**62:  # no usable end: price as of now
            end_ns = time.time_ns()
        key = (provider, model, response_model, end_ns // _NS_PER_DAY)
        try:
            rates = self._cache.get(key)
        except TypeError:  # a model or provider attribute that is not text: no price to find
            return UNPRICED
        if rates is None:
            rates = self._resolve_cached(key, end_ns)
        if rates is _PER_MINUTE:  # time-of-day prices (off-peak hours): resolved per minute
            key = (provider, model, response_model, end_ns // _NS_PER_MINUTE, "minute")
            rates = self._cache.get(key)
            if rates is None:
                rates = self._resolve_cached(key, end_ns)
        if rates is UNPRICED:
            return UNPRICED
        flat = rates.flat
        if flat is not None and i is not None and i >= (cr or 0) + (cw or 0):  # Rates.cost's common case, inlined
            cr, cw = cr or 0, cw or 0
            return (i - cr - cw) * flat[0] + (o or 0) * flat[1] + cr * flat[2] + cw * flat[3], rates.source
        return rates.cost(i, o, cr, cw), rates.source

    def _resolve_cached(self, key, end_ns):
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            provider, model, response_model = key[:3]
            when = dt.datetime.fromtimestamp(end_ns / 1e9, tz=dt.timezone.utc)
            try:
                rates, time_of_day = self.resolve(provider, model, response_model, when)
            except Exception:  # deliberate: a catalogue fault leaves the call unpriced, loudly
                _log.warning("spanmeter could not price model %r", model, exc_info=True)
                rates, time_of_day = None, False
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            entry = _PER_MINUTE if time_of_day and len(key) == 4 else (rates or UNPRICED)
            self._cache[key] = entry
            return entry

    def resolve(self, provider, model, response_model, when: dt.datetime) -> tuple[Rates | None, bool]:
        """(rates or None, time-of-day dependent) for a model at a time, by the precedence rules."""
        names = [m for m in (response_model, model) if isinstance(m, str) and m.strip()]
        prov = provider.strip().lower() if isinstance(provider, str) else None
        override = self._override(prov, [n.strip().lower() for n in names], when.date())
        if override is not None:
            return override.rates(), False
        if self.catalogue:
            for name in names:
                rates, time_of_day = catalogue_rates(prov, name, when)
                if rates is not None:
                    return rates, time_of_day
        return None, False

    def _override(self, provider, names, day) -> PriceOverride | None:
        def best(entries):
            live = [e for e in entries if e.start_date is None or e.start_date <= day]
            return max(live, key=lambda e: e.start_date or dt.date.min) if live else None

        for name in names:
            found = best([e for e in self.overrides if e.model == name and e.provider == provider and provider])
            if found is None:
                found = best([e for e in self.overrides if e.model == name and e.provider is None])
            if found is not None:
                return found
        if provider:
            return best([e for e in self.overrides if e.model is None and e.provider == provider])
        return None

    def refresh_if_due(self) -> None:
        """Drop cached prices when the catalogue was updated (checked every 10 s at most).

        Called by the processor before it aggregates, never while it holds the state lock
        (``on_refresh`` takes it).
        """
        if self._updater is None:
            return
        now = time.monotonic()
        if now - self._checked < 10.0:
            return
        self._checked = now
        snapshot = _catalogue().get_snapshot()
        if snapshot is not self._snapshot:
            with self._lock:
                self._snapshot = snapshot
                self._cache.clear()
            if self.on_refresh is not None:
                self.on_refresh()
