"""Exports: every format read back by its standard reader; encryption; owners only."""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import zipfile
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pyrage
import pytest
import zstandard
from defusedxml import ElementTree

from datamgmt import pg
from datamgmt.models import Export
from datamgmt.services.exports import export_directory, export_run

from .conftest import table_contents

pytestmark = pytest.mark.django_db(transaction=True)


def run_export(client, body: dict) -> tuple[dict, bytes]:
    """POST the export (202), run its job as a worker would, download it."""
    response = client.post("/api/v1/exports/", body, format="json")
    assert response.status_code == 202, response.json()
    assert response.json()["status"] == "pending"
    export_run(export_id=response.json()["id"])
    detail = client.get(f"/api/v1/exports/{response.json()['id']}/").json()
    assert detail["status"] == "succeeded"
    download = client.get(f"/api/v1/exports/{detail['id']}/download/")
    assert download.status_code == 200
    return detail, b"".join(download.streaming_content)


def test_json_export_of_a_user_holds_what_they_own_and_nothing_of_others(api_client, seeded):
    detail, data = run_export(api_client, {"scope": "user", "format": "json"})

    parsed = json.loads(data)
    titles = {row["title"] for row in parsed["tables"]["conversations_conversation"]}
    assert titles == {"Trip"}
    assert len(parsed["tables"]["conversations_message"]) == 3
    assert {row["title"] for row in parsed["tables"]["knowledge_document"]} == {"Guide"}
    assert parsed["tables"]["accounts_user"][0]["username"] == "alice"
    assert parsed["tables"]["accounts_user"][0]["password"] == "!"
    assert len(parsed["tables"]["knowledge_chunk"][0]["embedding"]) == 384
    assert detail["row_counts"]["conversations_message"] == 3


def test_csv_export_is_a_zip_of_one_csv_per_table(api_client, seeded):
    conversation = seeded["conversation"]
    _, data = run_export(
        api_client,
        {
            "scope": "conversation",
            "format": "csv",
            "parameters": {"conversation_id": str(conversation.pk)},
        },
    )

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert {"conversations_conversation.csv", "conversations_message.csv"} <= set(
            archive.namelist()
        )
        rows = list(
            csv.DictReader(io.TextIOWrapper(archive.open("conversations_message.csv"), "utf-8"))
        )
    assert [r["position"] for r in sorted(rows, key=lambda r: int(r["position"]))] == [
        "0",
        "1",
        "2",
    ]
    assert "'quotes', <tags> & a\nnewline" in rows[0]["content"]
    assert json.loads(rows[0]["metadata"]) == {"n": int(rows[0]["position"])}


def test_xml_export_is_well_formed_and_parses_with_defusedxml(api_client, seeded):
    _, data = run_export(
        api_client,
        {
            "scope": "document",
            "format": "xml",
            "compression": "gzip",
            "parameters": {"document_id": str(seeded["document"].pk)},
        },
    )

    root = ElementTree.fromstring(gzip.decompress(data))
    tables = {t.get("name"): t for t in root.findall("table")}
    assert len(tables["knowledge_chunk"].findall("row")) == 2
    fields = {f.get("name"): f for f in tables["knowledge_document"].find("row").findall("field")}
    assert fields["title"].text == "Guide"


def test_parquet_export_reads_back_with_typed_columns(api_client, seeded):
    _, data = run_export(api_client, {"scope": "user", "format": "parquet", "compression": "zstd"})

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        messages = pq.read_table(io.BytesIO(archive.read("conversations_message.parquet")))
        chunks = pq.read_table(io.BytesIO(archive.read("knowledge_chunk.parquet")))
    assert messages.num_rows == 3
    assert str(messages.schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    assert str(messages.schema.field("tokens_in").type) == "int64"
    assert chunks.schema.field("embedding").type.value_type == pa.float32()
    assert chunks.column("embedding").to_pylist()[0] == [0.25] * 384
    assert sorted(messages.column("position").to_pylist()) == [0, 1, 2]


def test_sql_export_loads_into_an_empty_chatter_schema(staff_client, seeded, fresh_database):
    _, data = run_export(staff_client, {"scope": "full", "format": "sql", "compression": "zstd"})
    script = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read().decode()
    _, target = fresh_database()
    env = pg.libpq_env(pg.django_conninfo())
    schema = subprocess.run(
        [pg.pg_binary("pg_dump"), "--schema-only", "--no-owner", f"--dbname={env.pop('_CHATTER_CONNINFO')}"],
        capture_output=True, check=True, env=env,
    ).stdout  # fmt: skip
    target_env = pg.libpq_env(target)
    psql = [
        pg.pg_binary("psql"),
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        f"--dbname={target_env.pop('_CHATTER_CONNINFO')}",
    ]
    subprocess.run(psql, input=schema, check=True, env=target_env, capture_output=True)
    loaded_by_psql = subprocess.run(
        psql, input=script.encode(), env=target_env, capture_output=True
    )
    assert loaded_by_psql.returncode == 0, loaded_by_psql.stderr[-2000:]
    with psycopg.connect(target, autocommit=True) as conn:
        (messages,) = conn.execute("SELECT count(*) FROM conversations_message").fetchone()
    assert messages == 6
    source, loaded = table_contents(pg.django_conninfo()), table_contents(target)
    assert loaded["conversations_message"] == source["conversations_message"]
    assert loaded["knowledge_chunk"] == source["knowledge_chunk"]


def test_a_user_sql_export_carries_what_it_refers_to(
    api_client, seeded, fresh_database, staff_user
):
    from agents.models import Agent

    shared = Agent.objects.create(name="Shared", slug="shared", created_by=staff_user)
    seeded["conversation"].agent = shared
    seeded["conversation"].save()
    _, data = run_export(api_client, {"scope": "user", "format": "sql"})

    assert b"'Shared'" in data
    assert b"operator" not in data  # the staff member appears only as user-<id>


def test_an_encrypted_export_opens_with_age_and_refuses_a_wrong_passphrase(api_client, seeded):
    _, data = run_export(
        api_client, {"scope": "user", "format": "json", "passphrase": "long enough pass"}
    )

    assert data.startswith(b"age-encryption.org/v1\n-> scrypt ")
    assert json.loads(pyrage.passphrase.decrypt(data, "long enough pass"))["tables"]
    with pytest.raises(pyrage.DecryptError):
        pyrage.passphrase.decrypt(data, "not the passphrase")
    tampered = bytearray(data)
    tampered[-20] ^= 1
    with pytest.raises(pyrage.DecryptError):
        pyrage.passphrase.decrypt(bytes(tampered), "long enough pass")
    with pytest.raises(pyrage.DecryptError):
        pyrage.passphrase.decrypt(data[: len(data) - 17], "long enough pass")
    assert not Export.objects.filter(pending_key__isnull=False).exists()


@pytest.mark.skipif(
    not Path("/usr/bin/age").exists(), reason="the age command-line tool is not installed"
)
def test_the_age_tool_decrypts_an_export(api_client, seeded, tmp_path):
    _, data = run_export(
        api_client, {"scope": "user", "format": "json", "passphrase": "long enough pass"}
    )
    path = tmp_path / "export.json.age"
    path.write_bytes(data)
    # age reads the passphrase from a terminal only; `script` gives it one.
    result = subprocess.run(
        ["script", "-qec", f"age -d -o {tmp_path / 'out.json'} {path}", "/dev/null"],
        input=b"long enough pass\n", capture_output=True, timeout=60,
    )  # fmt: skip
    assert (tmp_path / "out.json").exists(), result
    assert json.loads((tmp_path / "out.json").read_bytes())["tables"]


def test_others_exports_are_404_even_for_staff_download(
    api_client, other_client, staff_client, seeded
):
    export, _ = run_export(api_client, {"scope": "user", "format": "json"})

    assert other_client.get(f"/api/v1/exports/{export['id']}/").status_code == 404
    assert other_client.get(f"/api/v1/exports/{export['id']}/download/").status_code == 404
    assert staff_client.get(f"/api/v1/exports/{export['id']}/download/").status_code == 404
    assert other_client.get("/api/v1/exports/").json()["count"] == 0


def test_someone_elses_conversation_is_404(other_client, seeded):
    response = other_client.post(
        "/api/v1/exports/",
        {
            "scope": "conversation",
            "format": "json",
            "parameters": {"conversation_id": str(seeded["conversation"].pk)},
        },
        format="json",
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "everything", "format": "json"}, "scope"),
        ({"scope": "user", "format": "docx"}, "format"),
        ({"scope": "user", "format": "json", "compression": "rar"}, "compression"),
        ({"scope": "user", "format": "json", "passphrase": "short"}, "passphrase"),
        ({"scope": "user", "format": "json", "colour": "red"}, "colour"),
        (
            {"scope": "conversation", "format": "json", "parameters": {"conversation_id": "nope"}},
            "conversation_id",
        ),
        ({"scope": "custom", "format": "json", "parameters": {"models": ["no.Model"]}}, "models"),
        (
            {
                "scope": "custom",
                "format": "json",
                "parameters": {
                    "models": ["conversations.Message"],
                    "filters": {"conversations.Message": {"secret__regex": "x"}},
                },
            },
            "filters",
        ),
    ],
)
def test_bad_export_requests_are_400s_in_the_envelope(api_client, body, field):
    response = api_client.post("/api/v1/exports/", body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert field in json.dumps(error["details"])


def test_the_full_scope_is_for_staff(api_client):
    response = api_client.post(
        "/api/v1/exports/", {"scope": "full", "format": "json"}, format="json"
    )
    assert response.status_code == 403


def test_a_custom_export_applies_its_filters_and_the_owner(api_client, seeded):
    _, data = run_export(
        api_client,
        {
            "scope": "custom",
            "format": "json",
            "parameters": {
                "models": ["conversations.Message"],
                "filters": {"conversations.Message": {"role": "user"}},
            },
        },
    )
    rows = json.loads(data)["tables"]["conversations_message"]
    assert [r["role"] for r in rows] == ["user", "user"]


def test_expired_exports_lose_their_file(api_client, seeded):
    from django.utils import timezone

    from datamgmt.services.exports import exports_expire

    export, _ = run_export(api_client, {"scope": "user", "format": "json"})
    Export.objects.filter(pk=export["id"]).update(expires_at=timezone.now())

    assert exports_expire() == {"expired": 1}
    assert not (export_directory() / export["file_name"]).exists()
    assert api_client.get(f"/api/v1/exports/{export['id']}/download/").status_code == 410


@pytest.mark.parametrize("fmt", ["json", "csv", "xml", "parquet", "sql"])
def test_a_full_export_holds_pickled_columns_as_stored(staff_client, fmt):
    # django-q2 keeps each task's arguments and result pickled in text columns; read through
    # the ORM they are Python objects (a tuple here), which the Parquet writer refused and
    # the other formats wrote as something no restore could load back. Its Success and
    # Failure models are proxies of the same table, which was written three times.
    from django.db import connection
    from django.utils import timezone
    from django_q.models import Task

    now = timezone.now()
    Task.objects.create(
        id="b4d1c3f0", name="a-token", func="jobs.tasks.run_next", args=(1, "two"),
        kwargs={"k": 3}, result=[4], started=now, stopped=now, success=True,
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SELECT args, kwargs, result FROM django_q_task WHERE id = 'b4d1c3f0'")
        stored = cursor.fetchone()

    _, data = run_export(staff_client, {"scope": "full", "format": fmt})

    if fmt in ("csv", "parquet"):  # a zip of one file per table, each table once
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            assert len(names) == len(set(names))
            data = b"".join(archive.read(name) for name in names)
    for value in stored:
        assert value.encode() in data
