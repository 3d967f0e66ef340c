"""The spec loader: frozen objects with defaults, interpolation, value parsers, and every
problem of a broken spec reported at once with file, line and key (tests/specs/*.yaml)."""

from __future__ import annotations

import dataclasses
import os
import re
import textwrap
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from aitems_sync.errors import SpecError, SpecProblem
from aitems_sync.rows.shape import Shaper
from aitems_sync.spec.load import load_spec
from aitems_sync.spec.model import (
    DEFAULT_ENDPOINT,
    DEFAULT_INVALID_LIMIT,
    DURATION_PATTERN,
    INVALID_LIMIT_PATTERN,
    SIZE_PATTERN,
    AitemsConfig,
    BatchPolicy,
    Field,
    InvalidLimit,
    MetricsConfig,
    RetryPolicy,
    parse_duration,
    parse_invalid_limit,
    parse_size,
    spec_schema,
)

SPECS = Path(__file__).parent / "specs"
CORPUS_ENV = {"NCP_ACCESS_KEY": "AK-corpus", "NCP_SECRET_KEY": "SK-corpus-secret-value"}

FULL_SPEC = """\
version: 1
aitems:
  endpoint: http://127.0.0.1:8787/api/v1/
  service_id: ${AITEMS_SERVICE_ID}
  access_key: ${NCP_ACCESS_KEY}
  secret_key: ${file:secrets/sk.txt}
  timeout: 1m
  batch: {max_rows: 500, max_bytes: 1MiB, in_flight: 2}
  retry: {attempts: 3, max_elapsed: 1h30m}
state: sqlite:///state/aitems-sync.db
sources:
  shop:
    url: sqlite:///data/shop.db
    timezone: Asia/Seoul
datasets:
  users:
    type: user
    dataset_id: ${AITEMS_USER_DATASET_ID:-dsusers0001}
    query: |
      SELECT id AS USER_ID, age AS AGE, gender AS GENDER, updated_at FROM customers
    cursor: UPDATED_AT
    lookback: 10m
    fields:
      - {name: USER_ID, type: string}
      - {name: AGE, type: [int, "null"]}
      - {name: GENDER, type: [string, "null"], categorical: true}
    json_schema: schemas/users.json
    on_invalid: fail
    max_invalid: 50
  events:
    type: interaction
    dataset_id: dsevent0001
    source: shop
    query: SELECT u AS USER_ID, i AS ITEM_ID, ts AS TIMESTAMP FROM events
    cursor: ts
    fields:
      - {name: USER_ID, type: string}
      - {name: ITEM_ID, type: string}
      - {name: TIMESTAMP, type: long}
    json_schema: {properties: {USER_ID: {minLength: 1}}}
"""

MINIMAL_SPEC = """\
version: 1
aitems: {service_id: svc, access_key: ak, secret_key: sk}
sources:
  shop: {url: "sqlite:///shop.db"}
datasets:
  items:
    type: item
    dataset_id: dsitems0001
    query: SELECT id AS ITEM_ID, changed FROM items
    cursor: changed
    fields: [{name: ITEM_ID, type: string}]
"""


def write(folder: Path, text: str, name: str = "sync.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path, env: dict[str, str] | None = None) -> tuple[SpecProblem, ...]:
    with pytest.raises(SpecError) as caught:
        load_spec(path, env=env or {})
    return caught.value.problems


# --- A valid spec ---------------------------------------------------------------------------------


def test_full_spec_loads_into_frozen_objects(tmp_path: Path) -> None:
    write(tmp_path, "sk-from-file\n", "secrets/sk.txt")
    write(tmp_path, '{"properties": {"AGE": {"minimum": 0}}}', "schemas/users.json")
    env = {"AITEMS_SERVICE_ID": "svc0001", "NCP_ACCESS_KEY": "AK"}
    spec = load_spec(write(tmp_path, FULL_SPEC), env=env)

    assert spec.path == tmp_path / "sync.yaml"
    assert spec.aitems == AitemsConfig(
        service_id="svc0001",
        access_key="AK",
        secret_key="sk-from-file",
        endpoint="http://127.0.0.1:8787/api/v1",
        timeout=60.0,
        connect_timeout=10.0,
        batch=BatchPolicy(max_rows=500, max_bytes=2**20, in_flight=2),
        retry=RetryPolicy(attempts=3, backoff=0.5, max_backoff=60.0, max_elapsed=5400.0),
    )
    assert spec.state_url == f"sqlite:///{tmp_path}/state/aitems-sync.db"
    assert spec.sources["shop"].url == f"sqlite:///{tmp_path}/data/shop.db"
    assert spec.sources["shop"].timezone == "Asia/Seoul"
    users, events = spec.datasets["users"], spec.datasets["events"]
    assert list(spec.datasets) == ["users", "events"]
    assert (users.type, users.dataset_id, users.source) == ("user", "dsusers0001", "shop")
    assert users.fields == (
        Field("USER_ID", ("string",)),
        Field("AGE", ("int", "null")),
        Field("GENDER", ("string", "null"), categorical=True),
    )
    assert users.cursor == "UPDATED_AT"
    assert users.key == ("USER_ID",)
    assert users.lookback == timedelta(minutes=10)
    assert dict(users.json_schema or {}) == {"properties": {"AGE": {"minimum": 0}}}
    assert (users.on_invalid, users.max_invalid) == ("fail", InvalidLimit(count=50))
    assert events.key == () and events.key_fields == ("USER_ID", "ITEM_ID", "TIMESTAMP")
    assert dict(events.json_schema or {}) == {"properties": {"USER_ID": {"minLength": 1}}}
    assert (events.on_invalid, events.max_invalid) == ("quarantine", DEFAULT_INVALID_LIMIT)
    assert spec.metrics == MetricsConfig(pushgateway=None, job="aitems-sync")


def test_minimal_spec_gets_every_default(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL_SPEC), env={})

    assert spec.aitems == AitemsConfig("svc", "ak", "sk")
    assert spec.aitems.endpoint == DEFAULT_ENDPOINT
    assert spec.aitems.batch == BatchPolicy(1000, 4_000_000, 4)
    assert spec.aitems.retry == RetryPolicy(8, 0.5, 60.0, 600.0)
    assert spec.state_url == f"sqlite:///{tmp_path}/state/aitems-sync.db"
    assert spec.sources["shop"].timezone == "UTC"
    items = spec.datasets["items"]
    assert (items.source, items.key, items.lookback) == ("shop", ("ITEM_ID",), timedelta(0))
    assert (items.json_schema, items.on_invalid) == (None, "quarantine")
    assert items.max_invalid == InvalidLimit(ratio=0.01, floor=10)
    assert spec.metrics == MetricsConfig()


def test_loaded_spec_is_read_only(tmp_path: Path) -> None:
    write(tmp_path, "sk", "secrets/sk.txt")
    text = FULL_SPEC.replace("schemas/users.json", "{}")
    spec = load_spec(write(tmp_path, text), env={"AITEMS_SERVICE_ID": "s", "NCP_ACCESS_KEY": "a"})

    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.datasets["users"].cursor = "id"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.datasets["other"] = spec.datasets["users"]  # type: ignore[index]
    with pytest.raises(TypeError):
        spec.datasets["events"].json_schema["type"] = "object"  # type: ignore[index]


def test_secrets_stay_out_of_the_spec_repr(tmp_path: Path) -> None:
    text = MINIMAL_SPEC.replace("secret_key: sk", "secret_key: '${SK}'").replace(
        '"sqlite:///shop.db"', '"postgresql://app:${DB_PASSWORD}@db/shop"'
    )
    spec = load_spec(write(tmp_path, text), env={"SK": "s3cr3t-key", "DB_PASSWORD": "pw-1234"})

    assert spec.aitems.secret_key == "s3cr3t-key"
    assert spec.sources["shop"].url == "postgresql://app:pw-1234@db/shop"
    assert "s3cr3t-key" not in repr(spec) and "pw-1234" not in repr(spec)


def test_merge_keys_share_a_dataset_without_duplicate_key_complaints(tmp_path: Path) -> None:
    text = MINIMAL_SPEC + textwrap.indent(
        "items-copy:\n  <<: *items\n  dataset_id: dsitems0002\n", "  "
    )
    spec = load_spec(write(tmp_path, text.replace("  items:\n", "  items: &items\n")), env={})

    assert spec.datasets["items-copy"].dataset_id == "dsitems0002"
    assert spec.datasets["items-copy"].query == spec.datasets["items"].query


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///state/x.db", "sqlite:///{dir}/state/x.db"),
        ("sqlite:///./x.db", "sqlite:///{dir}/x.db"),
        ("sqlite:///../x.db", "sqlite:///{parent}/x.db"),
        ("sqlite+pysqlite:///x.db?timeout=5", "sqlite+pysqlite:///{dir}/x.db?timeout=5"),
        ("sqlite:////var/lib/x.db", "sqlite:////var/lib/x.db"),
        ("sqlite://", "sqlite://"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("sqlite:///file:x.db?mode=ro&uri=true", "sqlite:///file:x.db?mode=ro&uri=true"),
        ("postgresql+psycopg://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
    ],
)
def test_relative_sqlite_paths_resolve_against_the_spec_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    folder = tmp_path / "conf"
    text = MINIMAL_SPEC.replace('"sqlite:///shop.db"', f'"{url}"') + f'state: "{url}"\n'
    path = write(folder, text)
    monkeypatch.chdir(tmp_path)  # the working folder must not matter

    spec = load_spec(path.relative_to(tmp_path), env={})

    want = expected.format(dir=folder, parent=tmp_path)
    assert (spec.state_url, spec.sources["shop"].url) == (want, want)


# --- Interpolation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": "set"}, "set"),
        ("${A:-fallback}", {"A": ""}, "fallback"),
        ("pre-${A}-post", {"A": ""}, "pre--post"),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("cost: $$5", {}, "cost: $5"),
        ("$${A}", {"A": "x"}, "${A}"),
        ("$$${A}", {"A": "x"}, "$x"),
        ("a$b and $1", {}, "a$b and $1"),
        ("${A}", {"A": "${B}"}, "${B}"),
        ("${file:secret.txt}", {}, "from-file"),
        ("<${file:./secret.txt}>", {}, "<from-file>"),
    ],
)
def test_interpolation(tmp_path: Path, written: str, env: dict[str, str], expected: str) -> None:
    write(tmp_path, "from-file\n\n", "secret.txt")
    text = MINIMAL_SPEC.replace("svc,", f"'{written}',")

    spec = load_spec(write(tmp_path, text), env=env)

    assert spec.aitems.service_id == expected


def test_interpolation_reaches_into_lists_and_typed_values(tmp_path: Path) -> None:
    text = MINIMAL_SPEC.replace(
        "fields: [{name: ITEM_ID, type: string}]",
        "key: ['${K}']\n    lookback: ${L:-2m}\n"
        "    fields: [{name: ITEM_ID, type: string}, {name: '${F}', type: [int, 'null']}]",
    ) + "metrics: {job: '${JOB}'}\n"
    env = {"K": "ITEM_ID", "F": "PRICE", "JOB": "nightly"}

    spec = load_spec(write(tmp_path, text), env=env)

    items = spec.datasets["items"]
    assert items.key == ("ITEM_ID",)
    assert items.field_names == ("ITEM_ID", "PRICE")
    assert items.lookback == timedelta(minutes=2)
    assert spec.metrics.job == "nightly"


def test_an_interpolated_number_is_accepted_as_a_string_of_digits(tmp_path: Path) -> None:
    text = MINIMAL_SPEC.replace(
        "secret_key: sk}", "secret_key: sk, batch: {max_rows: '${ROWS}', in_flight: '${N:-8}'}}"
    )
    spec = load_spec(write(tmp_path, text), env={"ROWS": "250"})

    assert (spec.aitems.batch.max_rows, spec.aitems.batch.in_flight) == (250, 8)


@pytest.mark.parametrize(
    ("written", "fragment"),
    [
        ("${MISSING}", "environment variable MISSING is not set (use ${MISSING:-default}"),
        ("${file:nope.txt}", "(from ${file:nope.txt}) does not exist"),
        ("${not a name}", "'${not a name}' is not a reference; write ${NAME}"),
        ("${A:-${B}}", "an unclosed or nested '${'"),
        ("${A", "an unclosed or nested '${'"),
    ],
)
def test_interpolation_problems(tmp_path: Path, written: str, fragment: str) -> None:
    path = write(tmp_path, MINIMAL_SPEC.replace("svc,", f"'{written}',"))

    (problem,) = problems_of(path)

    assert (problem.line, problem.key) == (2, "aitems.service_id")
    assert fragment in problem.message


def test_values_from_the_environment_never_appear_in_messages(tmp_path: Path) -> None:
    secret = "hunter2-TOP-secret"
    spec = """\
    version: 1
    aitems:
      service_id: svc
      access_key: ak
      secret_key: ${S}
      endpoint: ${S}
      timeout: ${S}
      batch: {max_rows: "${S}", max_bytes: "${S}"}
    state: ${S}
    sources:
      shop: {url: "${S}", timezone: "${TZ}"}
    datasets:
      users:
        type: ${TYPE}
        dataset_id: ds
        source: ${S}
        query: SELECT 1
        cursor: ${S}
        key: ["${S}"]
        lookback: ${S}
        on_invalid: ${S}
        max_invalid: ${S}
        json_schema: ${S}
        fields: [{name: "${S}", type: string}]
    """
    env = {"S": secret, "TZ": "Asia/Seoulz", "TYPE": "usr"}

    problems = problems_of(write(tmp_path, spec), env=env)

    keys = {p.key for p in problems}
    for key in (
        "aitems.endpoint", "aitems.timeout", "aitems.batch.max_rows", "aitems.batch.max_bytes",
        "state", "sources.shop.url", "sources.shop.timezone", "datasets.users.type",
        "datasets.users.cursor", "datasets.users.lookback",
        "datasets.users.on_invalid", "datasets.users.max_invalid",
        "datasets.users.json_schema",
    ):
        assert key in keys, f"no problem reported for {key}"
    text = "\n".join(str(p) for p in problems)
    for leak in (secret, "Asia/Seoulz", "did you mean", "'usr'"):
        assert leak not in text


def test_missing_spec_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"

    (problem,) = problems_of(path)

    assert (problem.file, problem.line) == (str(path), None)
    assert "--config" in problem.message and "AITEMS_SYNC_CONFIG" in problem.message


# --- The broken-spec corpus -----------------------------------------------------------------------


def expectations(path: Path) -> list[tuple[int | None, str, str]]:
    """``# expect: LINE KEY: FRAGMENT ;; ...`` on the first line; ``-`` for no line or key."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} has no '# expect:' first line"
    out = []
    for item in first.removeprefix("# expect: ").split(" ;; "):
        line, rest = item.split(" ", 1)
        key, fragment = rest.split(": ", 1)
        out.append((None if line == "-" else int(line), "" if key == "-" else key, fragment))
    return out


CORPUS = sorted(SPECS.glob("*.yaml"))


def test_corpus_covers_at_least_24_broken_specs() -> None:
    assert len(CORPUS) >= 24


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_broken_spec_reports_every_problem_with_file_line_and_key(path: Path) -> None:
    problems = problems_of(path, env=CORPUS_ENV)

    report = "\n".join(map(str, problems))
    assert {p.file for p in problems} == {str(path)}
    unmatched = list(problems)
    for line, key, fragment in expectations(path):
        found = [p for p in unmatched if (p.line, p.key) == (line, key) and fragment in p.message]
        assert found, f"expected {line} {key}: {fragment!r}; got:\n{report}"
        unmatched.remove(found[0])
    assert not unmatched, f"unexpected problems:\n{report}"
    assert CORPUS_ENV["NCP_SECRET_KEY"] not in report


def test_several_problems_are_reported_in_line_order(tmp_path: Path) -> None:
    problems = problems_of(SPECS / "several-problems.yaml", env=CORPUS_ENV)

    assert len(problems) == 12
    lines = [p.line or 0 for p in problems]
    assert lines == sorted(lines)


# --- Value parsers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10m", 600), ("30s", 30), ("1h30m", 5400), ("500ms", 0.5), ("2d", 172800),
        ("1.5h", 5400), (" 1h 30m ", 5400), ("90", 90), ("0", 0), ("0.25", 0.25),
        (45, 45), (0.5, 0.5), (0, 0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        *((t, "is not a duration") for t in ["10 minutes", "10M", "", "m", "-5s", "1y", "s10"]),
        ("1h-30m", "is not a duration"), (True, "is not a duration"),
        (float("nan"), "is not a duration"), (-1, "is negative"),
    ],
)
def test_parse_duration_rejects(text: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4MB", 4_000_000), ("4MiB", 4 * 2**20), ("512KB", 512_000), ("512kb", 512_000),
        ("100", 100), (100, 100), ("1.5KB", 1500), ("2GiB", 2 * 2**30), ("10 B", 10),
        ("1GB", 10**9),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        *((t, "is not a size") for t in ["4 megabytes", "4XB", "", "-1", "MB", "4MIB", True]),
        (-1, "is negative"), (1.5, "is not a whole number of bytes"),
    ],
)
def test_parse_size_rejects(text: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_size(text)


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        ("1%", InvalidLimit(ratio=0.01)), ("0.5%", InvalidLimit(ratio=0.005)),
        ("100%", InvalidLimit(ratio=1.0)), (" 2 % ", InvalidLimit(ratio=0.02)),
        (50, InvalidLimit(count=50)), ("50", InvalidLimit(count=50)),
        ("0", InvalidLimit(count=0)), (0, InvalidLimit(count=0)),
    ],
)
def test_parse_invalid_limit(value: str | int, limit: InvalidLimit) -> None:
    assert parse_invalid_limit(value) == limit


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("150%", "is over 100%"), ("1.5", "is not a whole count"), (1.5, "is not a whole count"),
        (-1, "is negative"), ("-1%", "is not a count or a share"),
        ("abc", "is not a count or a share"), ("%", "is not a count or a share"),
        (True, "is not a count or a share"),
    ],
)
def test_parse_invalid_limit_rejects(value: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_invalid_limit(value)


def test_parser_errors_name_the_value_they_refuse() -> None:
    with pytest.raises(ValueError, match=r"^'10 minutes' is not a duration; write it like 30s"):
        parse_duration("10 minutes")


# --- The shipped schema ---------------------------------------------------------------------------


def test_shipped_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(spec_schema())


def test_schema_patterns_are_the_parsers_patterns() -> None:
    defs = spec_schema()["$defs"]

    assert defs["duration"]["pattern"] == DURATION_PATTERN
    assert defs["size"]["pattern"] == SIZE_PATTERN
    assert defs["dataset"]["properties"]["max_invalid"]["anyOf"][0]["pattern"] == \
        INVALID_LIMIT_PATTERN
    for text in ("10 minutes", "4 megabytes", "1 %%"):
        assert not any(re.fullmatch(p, text) for p in (DURATION_PATTERN, SIZE_PATTERN))


def test_schema_defaults_match_the_loader_defaults() -> None:
    defs = spec_schema()["$defs"]
    aitems, dataset = defs["aitems"]["properties"], defs["dataset"]["properties"]
    batch, retry = aitems["batch"]["properties"], aitems["retry"]["properties"]

    assert aitems["endpoint"]["default"] == DEFAULT_ENDPOINT
    assert parse_duration(aitems["timeout"]["default"]).total_seconds() == AitemsConfig.timeout
    assert parse_duration(aitems["connect_timeout"]["default"]).total_seconds() == 10.0
    assert BatchPolicy(
        batch["max_rows"]["default"], parse_size(batch["max_bytes"]["default"]),
        batch["in_flight"]["default"],
    ) == BatchPolicy()
    assert RetryPolicy(
        retry["attempts"]["default"],
        *(parse_duration(retry[k]["default"]).total_seconds()
          for k in ("backoff", "max_backoff", "max_elapsed")),
    ) == RetryPolicy()
    default = dataset["max_invalid"]["default"]
    assert InvalidLimit(ratio=parse_invalid_limit(default["share"]).ratio,
                        floor=default["floor"]) == DEFAULT_INVALID_LIMIT
    assert dataset["on_invalid"]["default"] == "quarantine"
    assert defs["metrics"]["properties"]["job"]["default"] == MetricsConfig.job


# --- Hostile input: a located error, never a traceback --------------------------------------------

MINIMAL = """\
version: 1
aitems: {{service_id: svc1, access_key: a, secret_key: b{aitems}}}
sources: {{shop: {{url: "sqlite:///shop.db"}}}}
datasets:
  users:
    type: user
    dataset_id: ds1
    query: SELECT id AS USER_ID, updated_at FROM customers
    cursor: updated_at{dataset}
    fields: [{{name: USER_ID, type: string}}]
"""


@pytest.mark.parametrize(("aitems", "dataset", "key", "fragment"), [
    (", timeout: 300000000000", "", "aitems.timeout", "must be at most 30d"),
    (", retry: {backoff: 99999999d}", "", "aitems.retry.backoff", "must be at most 30d"),
    (", endpoint: 'http://exa mple.com/api/v1'", "", "aitems.endpoint",
     "has a host name that cannot be one"),
    ("", "\n    lookback: 999999999d", "datasets.users.lookback", "must be at most 366d"),
])
def test_values_past_what_the_libraries_take_are_spec_errors(
    tmp_path: Path, aitems: str, dataset: str, key: str, fragment: str
) -> None:
    [problem] = problems_of(write(tmp_path, MINIMAL.format(aitems=aitems, dataset=dataset)))

    assert problem.key == key
    assert problem.line is not None
    assert fragment in problem.message


def test_a_nul_byte_in_the_spec_is_located(tmp_path: Path) -> None:
    path = tmp_path / "sync.yaml"
    path.write_text(MINIMAL.format(aitems="", dataset="").replace("svc1", "svc\x001"))

    [problem] = problems_of(path)

    assert problem.line == 2
    assert "U+0000 is not allowed in YAML" in problem.message


def test_a_spec_nested_fifty_thousand_deep_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sync.yaml"
    path.write_text("version: " + "[" * 50_000)

    [problem] = problems_of(path)

    assert "nests lists or mappings too deeply" in problem.message


def test_a_spec_that_is_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "sync.yaml"
    os.mkfifo(path)  # nobody writes to it: reading would wait for ever

    [problem] = problems_of(path)

    assert "is not a regular file" in problem.message


@pytest.mark.parametrize(("target", "fragment"), [
    ("/dev/zero", "is not a regular file"),
    ("big.txt", "is larger than 256 KiB"),
])
def test_a_file_reference_reads_only_a_small_regular_file(
    tmp_path: Path, target: str, fragment: str
) -> None:
    (tmp_path / "big.txt").write_text("x" * (256 * 1024 + 1))
    text = MINIMAL.format(aitems="", dataset="").replace("secret_key: b",
                                                        f"secret_key: '${{file:{target}}}'")

    [problem] = problems_of(write(tmp_path, text))

    assert problem.key == "aitems.secret_key"
    assert fragment in problem.message


def test_a_yaml_alias_bomb_stops_at_a_bound(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{n}: &a{n} [*a{n - 1}, *a{n - 1}, *a{n - 1}, *a{n - 1}, *a{n - 1}, *a{n - 1}, "
              f"*a{n - 1}, *a{n - 1}, *a{n - 1}]" for n in range(1, 10)]
    path = tmp_path / "sync.yaml"
    path.write_text("\n".join(lines) + "\n")

    [problem] = problems_of(path)

    assert "more than 100,000 values once its YAML aliases are expanded" in problem.message


def test_a_json_schema_that_refers_to_the_network_is_a_spec_error(tmp_path: Path) -> None:
    text = MINIMAL.format(aitems="", dataset="\n    json_schema: {$ref: 'http://host/x.json'}")

    [problem] = problems_of(write(tmp_path, text))

    assert problem.key == "datasets.users.json_schema"
    assert "'http://host/x.json' is not a path relative to the spec" in problem.message
    assert "never fetched from the network" in problem.message


def _users_shaper(spec_path: Path) -> Shaper:
    dataset = load_spec(spec_path, env={}).datasets["users"]
    return Shaper(dataset, ["USER_ID", "updated_at"], UTC)


def test_a_json_schema_may_refer_to_local_files_which_are_embedded_once(tmp_path: Path) -> None:
    # sync.yaml -> schemas/user.yaml -> ids.json#/$defs/id -> ../shared.json, which refers back
    write(tmp_path, "$ref: ids.json#/$defs/id\n", "schemas/user.yaml")
    write(tmp_path, '{"$defs": {"id": {"properties": {"USER_ID": {"$ref": "../shared.json"}}}}}',
          "schemas/ids.json")
    write(tmp_path, '{"pattern": "^u[0-9]+$", "$defs": {"back": {"$ref": "schemas/ids.json"}}}',
          "shared.json")
    spec = write(tmp_path, MINIMAL.format(aitems="", dataset="\n    json_schema: "
                                          "schemas/user.yaml"))
    shaper = _users_shaper(spec)
    (tmp_path / "shared.json").unlink()  # validation reads no file: it was embedded at load

    assert shaper.shape(["u42", "2026-01-01"]) is not None
    assert shaper.shape(["x42", "2026-01-01"]) is None
    assert "does not match '^u[0-9]+$'" in shaper.explain(["x42", "2026-01-01"])[0].message


@pytest.mark.parametrize(("ref", "fragment"), [
    ("missing.json", "missing.json does not exist"),
    ("/etc/passwd", "'/etc/passwd' is not a path relative to the spec"),
    ("file:///etc/x.json", "'file:///etc/x.json' is not a path relative to the spec"),
    ("urn:x:y", "'urn:x:y' is not a path relative to the spec"),
    ("bad.json", "bad.json is not readable JSON or YAML"),
    ("list.json", "list.json does not hold a JSON Schema"),
])
def test_a_ref_to_a_file_that_cannot_be_used_is_a_located_spec_error(
    tmp_path: Path, ref: str, fragment: str
) -> None:
    write(tmp_path, "{not json", "bad.json")
    write(tmp_path, "[1, 2]", "list.json")
    text = MINIMAL.format(aitems="", dataset=f"\n    json_schema: {{$ref: '{ref}'}}")

    [problem] = problems_of(write(tmp_path, text))

    assert (problem.line, problem.key) == (10, "datasets.users.json_schema")
    assert fragment in problem.message


def test_object_storage_defaults_to_korea_and_needs_a_bucket(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL.format(aitems="", dataset="") +
                           "object_storage: {bucket: shop-aitems}\n"), env={})
    assert spec.object_storage is not None
    assert (spec.object_storage.endpoint, spec.object_storage.region,
            spec.object_storage.prefix) == ("https://kr.object.ncloudstorage.com",
                                            "kr-standard", "aitems-sync/")
    assert load_spec(write(tmp_path, MINIMAL.format(aitems="", dataset="")),
                     env={}).object_storage is None

    [problem] = problems_of(write(tmp_path, MINIMAL.format(aitems="", dataset="") +
                                  "object_storage: {bucket: Shop_Bucket}\n"))
    assert (problem.line, problem.key) == (11, "object_storage.bucket")


@pytest.mark.parametrize(("written", "read", "passing", "failing"), [
    ("{share: 1%, floor: 10}", 1, 1, None),
    ("{share: 1%, floor: 10}", 100, 10, 11),
    ("{share: 1%, floor: 10}", 100_000, 1000, 1001),
    ("{share: '1%', floor: '0'}", 10, 0, 1),
    ('"1%"', 100, 1, 2),
    ('"1%"', 10, 0, 1),
    ("50", 7, 7, None),
    ("50", 1000, 50, 51),
])
def test_max_invalid_allows_what_the_docs_table_says(
    tmp_path: Path, written: str, read: int, passing: int, failing: int | None,
) -> None:
    text = MINIMAL_SPEC + f"    max_invalid: {written}\n"
    limit = load_spec(write(tmp_path, text), env={}).datasets["items"].max_invalid

    assert not limit.exceeded(passing, read)
    assert failing is None or limit.exceeded(failing, read)


@pytest.mark.parametrize(("written", "fragment"), [
    ("{share: 50}", "a share such as 1%"),
    ("{share: 1%, floor: 2.5}", "a count such as 10"),
    ("{floor: 10}", "missing required key 'share'"),
    ("{share: 1%, flor: 10}", "did you mean 'floor'"),
])
def test_a_bad_max_invalid_mapping_is_located(tmp_path: Path, written: str,
                                              fragment: str) -> None:
    (problem,) = problems_of(write(tmp_path, MINIMAL_SPEC + f"    max_invalid: {written}\n"))

    assert problem.key.startswith("datasets.items.max_invalid") and fragment in problem.message
