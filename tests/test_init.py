"""`aitems-sync init`: a starter spec and emulator seed from a database's tables.

The choices are tested directly (column types to field types, the cursor, the tables, the
names); the command end to end, the way a user runs it: init on the sample shop (SQLite) and
on PostgreSQL, then `validate --connect` and `run` against an emulator started with the seed
init wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner, Result
from sqlalchemy.dialects import mysql, postgresql, sqlite

from aitems_sync.cli.main import main_group
from aitems_sync.emulator.server import EmulatorServer, load_seed
from aitems_sync.rows.coerce import NO_RULE, Failed, converters
from aitems_sync.scaffold.catalog import Catalog, Column, ForeignKey, Table, type_text
from aitems_sync.scaffold.choose import choose_cursor, pick_tables
from aitems_sync.scaffold.draft import draft_dataset
from aitems_sync.scaffold.mapping import map_column
from aitems_sync.scaffold.names import aitems_name, source_url
from aitems_sync.spec.load import load_spec

ROOT = Path(__file__).resolve().parent.parent
DIALECTS = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect(),
            "mysql": mysql.dialect()}

sys.path.insert(0, str(ROOT / "examples"))
import make_sample_db  # noqa: E402


def column(name: str, type_: Any, nullable: bool = True, dialect: str = "sqlite") -> Column:
    return Column(name, type_, nullable, type_text(type_, DIALECTS[dialect]))


def catalog(*tables: Table, dialect: str = "sqlite") -> Catalog:
    return Catalog(dialect, None, DIALECTS[dialect].identifier_preparer,
                   {t.name: t for t in tables})


# -- column types to field types ----------------------------------------------------------

PYTHON_TYPES = {"string": str, "int": int, "long": int, "double": float, "boolean": bool}


@pytest.mark.parametrize(("dialect", "name", "type_", "value", "expected", "categorical"), [
    ("postgresql", "n", sa.Integer(), 7, "int", False),
    ("postgresql", "n", sa.SmallInteger(), 7, "int", False),
    ("sqlite", "n", sa.Integer(), 2**40, "long", False),  # SQLite integers are 64-bit
    ("postgresql", "n", sa.BigInteger(), 2**40, "long", False),
    ("mysql", "n", mysql.INTEGER(unsigned=True), 2**31, "long", False),
    ("postgresql", "n", sa.Numeric(9, 0), Decimal("7"), "int", False),
    ("postgresql", "n", sa.Numeric(18, 0), Decimal("7"), "long", False),
    ("postgresql", "n", sa.Numeric(30, 0), Decimal("7"), "double", False),
    ("postgresql", "n", sa.Numeric(10, 2), Decimal("1.50"), "double", False),
    ("postgresql", "n", sa.Numeric(), Decimal("1.5"), "double", False),
    ("postgresql", "n", postgresql.DOUBLE_PRECISION(), 1.5, "double", False),
    ("sqlite", "n", sa.REAL(), 1.5, "double", False),
    ("postgresql", "flag", sa.Boolean(), True, "boolean", False),
    ("sqlite", "flag", sa.Boolean(), 1, "boolean", False),  # SQLite keeps 0 and 1
    ("postgresql", "title", sa.Text(), "A book", "string", False),
    ("postgresql", "nickname", sa.String(20), "kim", "string", True),  # short text
    ("postgresql", "title", sa.String(200), "A book", "string", False),
    ("sqlite", "gender", sa.Text(), "F", "string", True),  # named like a category
    ("postgresql", "tier", postgresql.ENUM("free", "pro", name="tier"), "pro", "string", True),
    ("postgresql", "id", sa.Uuid(), uuid.UUID(int=1), "string", False),
    ("postgresql", "at", sa.DateTime(), datetime(2026, 1, 1), "long", False),
    ("postgresql", "at", sa.DateTime(timezone=True), datetime(2026, 1, 1, tzinfo=ZoneInfo(
        "UTC")), "long", False),
    ("postgresql", "day", sa.Date(), date(2026, 1, 1), "long", False),
    ("postgresql", "opens", sa.Time(), time(9, 30), "string", False),
    ("sqlite", "updated_at", sa.Text(), "2026-01-01 09:00:00", "long", False),  # ISO text
    ("sqlite", "created", sa.Text(), "2026-01-01", "long", False),
    ("postgresql", "updated_at", sa.Text(), "2026-01-01 09:00:00", "string", False),
])
def test_a_column_maps_to_a_field_type_its_values_coerce_to(
        dialect: str, name: str, type_: Any, value: Any, expected: str,
        categorical: bool) -> None:
    mapped = map_column(column(name, type_, dialect=dialect), dialect)
    coerced = converters(ZoneInfo("UTC"))[expected](value)  # type: ignore[index]

    assert (mapped.type, mapped.categorical) == (expected, categorical)
    assert coerced is not NO_RULE and not isinstance(coerced, Failed)
    assert type(coerced) is PYTHON_TYPES[expected]


@pytest.mark.parametrize(("type_", "shown"), [
    (sa.JSON(), "JSON"), (postgresql.JSONB(), "JSONB"), (sa.LargeBinary(), "BYTEA"),
    (sa.Interval(), "INTERVAL"), (postgresql.ARRAY(sa.Integer()), "INTEGER[]"),
    (sa.types.NullType(), "no declared type"),
])
def test_a_column_without_an_aitems_type_is_left_out_with_the_reason(type_: Any,
                                                                     shown: str) -> None:
    mapped = map_column(column("extra", type_, dialect="postgresql"), "postgresql")

    assert mapped.type is None
    assert mapped.why.startswith(f"{shown} has no AiTEMS type")


# -- the cursor -----------------------------------------------------------------------------

TS = sa.DateTime()


def users(*columns: Column, indexes: tuple[tuple[str, tuple[str, ...]], ...] = (),
          key: tuple[str, ...] = ("id",)) -> Table:
    return Table("users", (column("id", sa.Integer(), False), *columns), key, indexes)


@pytest.mark.parametrize(("table", "kind", "expected", "why", "advice"), [
    pytest.param(users(column("visit_at", TS, False), column("login_at", TS, False),
                       indexes=(("users_login", ("login_at",)),)),
                 "user", "login_at", "the first column of index users_login", "updates are",
                 id="an indexed NOT NULL time before one without an index"),
    pytest.param(users(column("created_at", TS, False), column("updated_at", TS, False),
                       indexes=(("users_created", ("created_at",)),)),
                 "user", "updated_at", "a time named for changes", "no index starts with it",
                 id="a time named for changes before an indexed creation time"),
    pytest.param(users(column("seen_at", TS, True), column("born_at", TS, False),
                       indexes=(("users_seen", ("seen_at",)),)),
                 "user", "born_at", "NOT NULL", "no index",
                 id="NOT NULL before nullable"),
    pytest.param(users(column("updated_at", TS, True)), "user", "updated_at", "nullable",
                 "rows whose updated_at is NULL are never read",
                 id="a nullable time named for changes, with a warning"),
    pytest.param(users(column("name", sa.Text()), column("age", sa.Integer(), False)),
                 "user", "id", "an integer, NOT NULL, the first column of the primary key",
                 "updates are missed unless it grows on every update",
                 id="no time: the integer primary key, which misses updates"),
    pytest.param(users(column("name", sa.Text()), column("row_version", sa.Integer(), False)),
                 "user", "row_version", "an integer named for changes", "no index",
                 id="an integer version column before the primary key"),
    pytest.param(Table("events", (column("id", sa.Integer(), False),
                                  column("occurred_at", sa.Text(), False)), ("id",)),
                 "interaction", "id", "the first column of the primary key",
                 "concurrent inserts may commit out of order",
                 id="events: an indexed id before a time without an index (the sample shop)"),
    pytest.param(Table("events", (column("id", sa.Integer(), False),
                                  column("at", TS, False)), ("id",), (("ev_at", ("at",)),)),
                 "interaction", "at", "a time, NOT NULL, the first column of index ev_at", "",
                 id="events: an indexed time before an indexed id"),
])
def test_the_cursor_is_chosen_and_explained(table: Table, kind: Any, expected: str, why: str,
                                            advice: str) -> None:
    choice = choose_cursor(table, kind, "sqlite")

    assert choice.column == expected
    assert why in choice.why
    assert advice in choice.advice
    assert bool(advice) == bool(choice.advice)


def test_without_a_time_or_id_column_the_cursor_says_what_to_add() -> None:
    table = Table("tags", (column("label", sa.Text(), False), column("n", sa.Integer())))

    choice = choose_cursor(table, "item", "sqlite")

    assert choice.column is None
    assert "add a column that grows with each change (updated_at" in choice.advice


def test_an_event_tables_user_and_item_columns_are_never_its_cursor() -> None:
    members = users()
    events = Table("clicks", (column("member", sa.Integer(), False),
                              column("at", TS, False)),
                   indexes=(("clicks_member", ("member",)),),
                   foreign_keys=(ForeignKey(("member",), "users", ("id",)),))

    draft = draft_dataset(catalog(members, events), events, "interaction", "clicks",
                          {"user": members, "item": None})

    assert draft.cursor.column == "at"
    assert [(f.name, f.column) for f in draft.fields][:3] == [
        ("USER_ID", "member"), ("ITEM_ID", None), ("TIMESTAMP", "at")]
    assert any("ITEM_ID" in todo for todo in draft.todo)


# -- tables and names -----------------------------------------------------------------------


EVENT_COLUMNS = (column("user_id", sa.Text(), False), column("item_id", sa.Text(), False),
                 column("at", TS, False))


def _tables(*names: str) -> Catalog:
    """Tables with an id; those named ``*+`` (the ``+`` dropped) also a user, item and time."""
    return catalog(*(Table(n.rstrip("+"), (column("id", sa.Integer(), False),
                                           *(EVENT_COLUMNS if n.endswith("+") else ())))
                     for n in names))


@pytest.mark.parametrize(("names", "expected", "note"), [
    (("customers", "products", "events+", "audit"),
     {"user": "customers", "item": "products", "interaction": "events"}, None),
    (("users", "order_items", "products", "page_views+"),
     {"user": "users", "item": "products", "interaction": "page_views"}, None),
    (("members", "products", "items"), {"user": "members"}, "item: several tables fit"),
    (("orders", "invoices"), {}, "user: no table is named like one"),
    (("users", "products", "audit_log"), {"user": "users", "item": "products"},
     "interaction: audit_log named like one, but without a user, an item and a time column"),
    (("users", "products", "audit_log", "ledger+"),
     {"user": "users", "item": "products", "interaction": "ledger"}, None),
    (("users", "products", "ledger+", "events+"),
     {"user": "users", "item": "products", "interaction": "events"}, None),
])
def test_tables_are_picked_by_name_and_ambiguity_is_left_to_a_person(
        names: tuple[str, ...], expected: dict[str, str], note: str | None) -> None:
    picks, notes = pick_tables(_tables(*names))

    assert {kind: c.name for kind, c in picks.items()} == expected
    assert note is None or any(n.startswith(note) for n in notes)


def test_an_event_table_is_found_by_its_references_to_the_users_and_items() -> None:
    found = catalog(
        users(), Table("products", (column("id", sa.Integer(), False),), ("id",)),
        Table("ledger", (column("uid", sa.Integer(), False),
                         column("pid", sa.Integer(), False), column("at", TS, False)),
              foreign_keys=(ForeignKey(("uid",), "users", ("id",)),
                            ForeignKey(("pid",), "products", ("id",)))))

    picks, _ = pick_tables(found)

    assert picks["interaction"].name == "ledger"
    assert "refers to the user and the item tables" in picks["interaction"].why


@pytest.mark.parametrize(("text", "taken", "expected"), [
    ("customers", [], "customers"), ("a", [], "a__"), ("9lives", [], "d9lives"),
    ("a very long table name indeed", [], "a_very_long_table_na"),
    ("events", ["events"], "events_2"),
])
def test_aitems_names_follow_the_aitems_rule(text: str, taken: list[str],
                                             expected: str) -> None:
    assert aitems_name(text, taken) == expected


def test_a_url_with_a_password_is_written_as_a_variable_without_default() -> None:
    written = source_url("postgresql+psycopg://shop:pa55word@db/shop", "shop",
                         variable_name=None, spec_dir="/x", cwd="/x")

    assert written.value == "${SHOP_DATABASE_URL}"
    assert "pa55word" not in written.shown
    assert "set it before validate and run" in written.note


def test_a_relative_sqlite_path_is_written_relative_to_the_spec() -> None:
    written = source_url("sqlite:///data/shop.db", "shop", variable_name="SHOP_DB",
                         spec_dir="/repo/conf", cwd="/repo")

    assert written.value == "${SHOP_DB:-sqlite:///../data/shop.db}"
    assert written.note == ""


def test_field_names_clashing_with_the_id_or_each_other_get_a_suffix() -> None:
    table = Table("people", (column("id", sa.Text(), False), column("user_id", sa.Integer()),
                             column("Age", sa.Integer()), column("age", sa.Integer()),
                             column("2fa", sa.Boolean())), ("id",))

    draft = draft_dataset(catalog(table), table, "user", "people", {})

    assert [f.name for f in draft.fields] == ["USER_ID", "USER_ID_2", "AGE", "AGE_2", "F_2FA"]


# -- the command, end to end ----------------------------------------------------------------


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main_group, list(args), env=env)


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "shop.db"
    make_sample_db.create(path, users=30, items=20, events=100, seed=3)
    return path


@pytest.fixture
def started() -> Iterator[list[EmulatorServer]]:
    """Emulators a test starts from the seed init wrote; stopped at the end."""
    servers: list[EmulatorServer] = []
    yield servers
    for server in servers:
        server.stop()


def emulator_for(seed: Path, started: list[EmulatorServer]) -> EmulatorServer:
    server = EmulatorServer(seed=load_seed(seed), port=0)
    server.start()
    started.append(server)
    return server


def test_init_on_the_sample_shop_writes_a_spec_that_validates_and_runs(
        tmp_path: Path, shop: Path, started: list[EmulatorServer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    done = invoke("init", "sqlite:///data/shop.db", "--output", "conf/sync.yaml")

    assert done.exit_code == 0, done.output
    assert "customers (user) from table customers" in done.stdout
    assert "aitems-sync --config conf/sync.yaml validate --connect" in done.stdout
    spec_text = (tmp_path / "conf" / "sync.yaml").read_text()
    assert "url: ${SHOP_DATABASE_URL:-sqlite:///../data/shop.db}" in spec_text
    server = emulator_for(tmp_path / "conf" / "emulator-seed.yaml", started)
    env = {"AITEMS_ENDPOINT": server.base_url}

    validated = invoke("--config", "conf/sync.yaml", "validate", "--connect", env=env)
    ran = invoke("--config", "conf/sync.yaml", "run", env=env)

    assert validated.exit_code == 0, validated.output
    assert "dataset events: AiTEMS dataset dsevents (interaction) is attached" in (
        validated.stdout)
    assert ran.exit_code == 0, ran.output
    assert {d: server.received(d).rows_received for d in (
        "dscustomers", "dsproducts", "dsevents")} == {
        "dscustomers": 30, "dsproducts": 20, "dsevents": 100}
    event = server.received("dsevents").rows[0]
    assert list(event) == ["USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE"]
    assert isinstance(event["TIMESTAMP"], int)


def test_the_spec_chooses_as_documented_on_the_sample_shop(tmp_path: Path, shop: Path) -> None:
    done = invoke("--json", "init", f"sqlite:///{shop}", "-o", str(tmp_path / "sync.yaml"))

    report = json.loads(done.stdout)
    by_name = {d["name"]: d for d in report["datasets"]}
    spec = load_spec(tmp_path / "sync.yaml")
    assert done.exit_code == 0, done.output
    assert by_name["customers"]["cursor"] == "updated_at"
    assert by_name["events"]["cursor"] == "id" and by_name["events"]["key"] == ["id"]
    assert spec.datasets["events"].key == ("id",)
    assert spec.datasets["customers"].lookback.total_seconds() == 600
    assert [(f.name, f.types, f.categorical) for f in spec.datasets["products"].fields] == [
        ("ITEM_ID", ("string",), False), ("CATEGORY", ("string", "null"), True),
        ("PRICE", ("double", "null"), False), ("CREATION_TIMESTAMP", ("long",), False)]
    assert "updated_at" not in spec.datasets["products"].field_names  # read, not sent


def test_init_through_the_installed_console_script(tmp_path: Path, shop: Path) -> None:
    script = Path(sys.executable).with_name("aitems-sync")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHOP_URL": f"sqlite:///{shop}"}

    done = subprocess.run([str(script), "init", "--url-env", "SHOP_URL", "--user",
                           "customers", "--output", str(tmp_path / "users.yaml")],
                          capture_output=True, text=True, env=env, timeout=60)

    assert done.returncode == 0, done.stderr
    spec = load_spec(tmp_path / "users.yaml")
    assert list(spec.datasets) == ["customers"]
    assert "url: ${SHOP_URL:-sqlite:///" in (tmp_path / "users.yaml").read_text()
    seed = load_seed(tmp_path / "emulator-seed.yaml")
    assert "datasets" not in seed["services"][0]  # AiTEMS attaches three types or none


def test_init_refuses_to_overwrite_without_force(tmp_path: Path, shop: Path) -> None:
    spec = tmp_path / "sync.yaml"
    spec.write_text("mine\n")

    refused = invoke("init", f"sqlite:///{shop}", "--output", str(spec))

    assert refused.exit_code == 2
    assert refused.stderr.startswith(f"FAILED: {spec} already exists: pass --force")
    assert spec.read_text() == "mine\n"
    assert not (tmp_path / "emulator-seed.yaml").exists()  # neither file was written
    forced = invoke("init", f"sqlite:///{shop}", "--output", str(spec), "--force")
    assert forced.exit_code == 0, forced.output
    assert spec.read_text().startswith("# A starter spec")


@pytest.mark.parametrize(("args", "message"), [
    (["--user", "nope"], "no table nope; the database has customers, events, products"),
    (["--url-env", "1X"], "'1X' is not an environment variable name"),
])
def test_init_usage_errors_exit_2(tmp_path: Path, shop: Path, args: list[str],
                                  message: str) -> None:
    done = invoke("init", f"sqlite:///{shop}", "-o", str(tmp_path / "s.yaml"), *args)

    assert done.exit_code == 2
    assert message in done.stderr


def test_the_url_may_be_given_as_the_reference_the_spec_writes(tmp_path: Path,
                                                              shop: Path) -> None:
    spec = tmp_path / "sync.yaml"

    done = invoke("init", "${SHOP_X}", "-o", str(spec), env={"SHOP_X": f"sqlite:///{shop}"})
    unset = invoke("init", "${NOT_SET_X}", "-o", str(tmp_path / "other.yaml"))
    neither = invoke("init", "-o", str(tmp_path / "other.yaml"))

    assert done.exit_code == 0, done.output
    assert f"url: ${{SHOP_X:-sqlite:///{shop}}}" in spec.read_text()
    assert unset.exit_code == 2 and "NOT_SET_X is not set" in unset.stderr
    assert neither.exit_code == 2 and "give the DATABASE_URL, or --url-env VAR" in neither.stderr


def test_init_lists_the_tables_when_none_is_named_like_a_dataset(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'misc.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE ledger (id INTEGER PRIMARY KEY)")
    engine.dispose()

    done = invoke("init", f"sqlite:///{tmp_path / 'misc.db'}", "-o", str(tmp_path / "s.yaml"))

    assert done.exit_code == 2
    assert "name them with --user TABLE, --item TABLE and --interaction TABLE" in done.stderr
    assert "The database has ledger" in done.stderr


def test_a_url_that_does_not_parse_is_a_usage_error(tmp_path: Path) -> None:
    done = invoke("init", "not a url", "-o", str(tmp_path / "s.yaml"))

    assert done.exit_code == 2
    assert "the database URL is not a SQLAlchemy URL" in done.stderr


def test_a_missing_sqlite_file_is_refused_and_not_created(tmp_path: Path) -> None:
    done = invoke("init", f"sqlite:///{tmp_path / 'typo.db'}", "-o", str(tmp_path / "s.yaml"))

    assert done.exit_code == 2
    assert "no SQLite database at" in done.stderr
    assert not (tmp_path / "typo.db").exists()


# -- PostgreSQL -----------------------------------------------------------------------------

PG_SCHEMA = """
CREATE TYPE tier AS ENUM ('free', 'pro');
CREATE TABLE members (
    member_id bigserial PRIMARY KEY, email text NOT NULL, tier tier NOT NULL,
    country varchar(2), score numeric(6, 2), vip boolean NOT NULL, prefs jsonb,
    modified_at timestamptz NOT NULL);
CREATE INDEX members_modified ON members (modified_at);
CREATE TABLE products (
    sku uuid PRIMARY KEY, title text NOT NULL, category varchar(30),
    price numeric(10, 2) NOT NULL, stock integer NOT NULL, released date,
    updated timestamp NOT NULL);
CREATE INDEX products_updated ON products (updated);
CREATE TABLE interactions (
    id bigserial PRIMARY KEY, member bigint NOT NULL REFERENCES members (member_id),
    product uuid NOT NULL REFERENCES products (sku), kind varchar(16) NOT NULL,
    happened_at timestamptz NOT NULL, rating real);
CREATE INDEX interactions_member ON interactions (member);
CREATE INDEX interactions_happened ON interactions (happened_at);
INSERT INTO members (email, tier, country, score, vip, prefs, modified_at)
SELECT 'm' || i || '@example.com', 'pro', 'KR', i * 1.5, mod(i, 2) = 0, '{}', now()
FROM generate_series(1, 12) AS i;
INSERT INTO products
SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'book ' || i, 'books',
       9.99, i, '2026-01-01', now()
FROM generate_series(1, 8) AS i;
INSERT INTO interactions (member, product, kind, happened_at, rating)
SELECT 1 + mod(i, 12), ('00000000-0000-0000-0000-' || lpad((1 + mod(i, 8))::text, 12, '0'))::uuid,
       'view', now() - interval '1 hour', NULL
FROM generate_series(1, 40) AS i;
"""


@pytest.mark.postgres
def test_init_on_postgresql_keeps_the_password_out_and_the_spec_runs(
        tmp_path: Path, pg_url: str, started: list[EmulatorServer]) -> None:
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(PG_SCHEMA)
    engine.dispose()
    # The test cluster trusts every connection: the password is only there to be kept out.
    url = sa.make_url(pg_url).set(password="Sup3r-s3cret").render_as_string(
        hide_password=False)
    spec = tmp_path / "sync.yaml"

    done = invoke("init", url, "--output", str(spec))

    assert done.exit_code == 0, done.output
    text = spec.read_text()
    assert "Sup3r-s3cret" not in text + done.output
    variable = f"{sa.make_url(pg_url).database.upper()}_DATABASE_URL"  # type: ignore[union-attr]
    assert f"url: ${{{variable}}}\n" in text
    assert f"export {variable}=" in done.stdout
    assert "email: left out, named like personal or secret data" in text
    server = emulator_for(tmp_path / "emulator-seed.yaml", started)
    env = {"AITEMS_ENDPOINT": server.base_url, variable: url}

    validated = invoke("--config", str(spec), "validate", "--connect", env=env)
    ran = invoke("--config", str(spec), "run", env=env)

    assert validated.exit_code == 0, validated.output
    assert ran.exit_code == 0, ran.output
    assert {d: server.received(d).rows_received for d in (
        "dsmembers", "dsproducts", "dsinteractions")} == {
        "dsmembers": 12, "dsproducts": 8, "dsinteractions": 40}
    member = server.received("dsmembers").rows[0]
    assert list(member) == ["USER_ID", "TIER", "COUNTRY", "SCORE", "VIP"]
    assert isinstance(member["USER_ID"], str)  # a bigint id, coerced to its digits
    loaded = yaml.safe_load(text)
    assert loaded["datasets"]["interactions"]["cursor"] == "TIMESTAMP"
    assert loaded["datasets"]["interactions"]["key"] == ["id"]
