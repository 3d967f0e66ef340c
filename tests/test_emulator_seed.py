"""`aitems-sync emulator --seed FILE`: a seed's problems are each reported once, at file:line.

A mistake in one entry is not reported again at the entries that depend on it (a dataset of a
refused schema, a service of a refused dataset). Every case exits 2 before the emulator serves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from aitems_sync.cli.main import main_group

SEED = """\
keys:
  - {access_key: ak, secret_key: sk}
schemas:
  - name: shop_users
    datasetType: user
    fields:
      - {name: USER_ID, type: [string]}
      - {name: AGE, type: [integr, "null"]}
  - name: shop_items
    datasetType: item
    fields:
      - {name: ITEM_ID, type: [string]}
  - name: shop_events
    datasetType: interaction
    fields:
      - {name: USER_ID, type: [string]}
      - {name: ITEM_ID, type: [string]}
      - {name: TIMESTAMP, type: [long]}
datasets:
  - {datasetId: dsusers0001, type: user, name: users, schemaName: shop_users,
     osInfo: {region: KR, bucket: b, key: u.csv}}
  - {datasetId: dsitems0001, type: item, name: items, schemaName: shop_items,
     osInfo: {region: KR, bucket: b, key: i.csv}}
  - {datasetId: dsevent0001, type: interaction, name: events, schemaName: shop_events,
     osInfo: {region: KR, bucket: b, key: e.csv}}
services:
  - {serviceId: svc0001, name: shop, datasets: [dsusers0001, dsitems0001, dsevent0001]}
"""


def start(seed: Path) -> Result:
    return CliRunner().invoke(main_group, ["emulator", "--seed", str(seed), "--port", "0"])


def problems(result: Result) -> list[str]:
    assert result.exit_code == 2, result.output
    return [line.strip() for line in result.stderr.splitlines()[1:] if line.strip()]


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_an_invalid_schema_is_reported_at_its_line_and_not_again_at_its_dependents(
        tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(SEED)

    found = problems(start(seed))

    assert found == [f"{seed}:{line_of(SEED, 'integr')}: schemas[0]: fields[1].type must be a "
                     "list of distinct types from string, int, long, float, double, boolean, "
                     "null"]


def test_independent_problems_are_each_located(tmp_path: Path) -> None:
    text = (SEED.replace("integr", "int").replace("{access_key: ak, secret_key: sk}",
                                                   "{access_key: ak}")
            .replace("name: items,", "name: x,").replace("key: e.csv}", "key: ''}"))
    seed = tmp_path / "seed.yaml"
    seed.write_text(text)

    found = problems(start(seed))

    assert found == [
        f"{seed}:{line_of(text, 'access_key: ak')}: keys[0] must be {{access_key, secret_key}} "
        "strings",
        f"{seed}:{line_of(text, 'name: x,')}: datasets[1]: name must be 3 to 20 letters, "
        "digits, '_' or '-', starting with a letter",
        f"{seed}:{line_of(text, 'key: ' + repr(''))}: datasets[2]: osInfo must be "
        "{region, bucket, key} strings",
    ]  # and nothing of services[0], whose datasets were refused


def test_a_json_seed_is_located_too(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"schemas": [{"name": "shop_users", "datasetType": "usr",
                                             "fields": [{"name": "USER_ID",
                                                         "type": ["string"]}]}]}, indent=2))

    found = problems(start(seed))

    assert found == [f"{seed}:{line_of(seed.read_text(), 'usr')}: schemas[0]: datasetType must "
                     "be user, item or interaction"]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("keys:\n  - {access_key: a, secret_key: b}\nschemas: [\n", 4, "cannot read the emulator seed"),
    ("- just\n- a list\n", 1, "must be a mapping with keys, schemas, datasets and services"),
    ("schemas: {name: x}\n", 1, "schemas must be a list"),
])
def test_a_seed_that_is_not_a_seed_is_located(tmp_path: Path, text: str, line: int,
                                               message: str) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(text)

    result = start(seed)

    assert result.exit_code == 2, result.output
    assert f"{seed}:{line}:" in result.stderr
    assert message in result.stderr
