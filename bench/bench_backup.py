"""Chatter's full backup against a bare `pg_dump` of the same database, in the same run.

    .venv/bin/python bench/bench_backup.py            (BENCH_MESSAGES=200000 by default)

In a scratch database (`chatter_bench_backup`, dropped afterwards), seeded in SQL with
BENCH_MESSAGES messages (500 per conversation) and BENCH_MESSAGES / 20 knowledge chunks
(384-d vectors). Interleaved rounds (the machine's load drifts), BENCH_ROUNDS (3) of each:

1. bare: `pg_dump` with the same arguments a full backup runs (custom format, gzip:3, the
   bookkeeping tables' data left out) into a file;
2. chatter: `backup_run` of a full backup (change-log triggers ensured, the snapshot
   exported, pg_dump through Python into the file, checksums of every table computed
   meanwhile on the same snapshot, manifest written), unencrypted;
3. chatter with a passphrase (age: scrypt header, ChaCha20-Poly1305 stream).

Then an incremental after changing 1% of the messages, and peak memory (max RSS of a child
process) of `export_data --scope full --format json` at BENCH_MESSAGES / 10 and at
BENCH_MESSAGES messages: flat means the export streams.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.support import drop_database, recreate_database  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatter_project.settings")
os.environ["CHATTER_DB_NAME"] = DB_NAME = "chatter_bench_backup"

import django  # noqa: E402

django.setup()

from core.embedded_db import embedded_database_ensure  # noqa: E402

embedded_database_ensure()

from django.conf import settings  # noqa: E402

from datamgmt import pg  # noqa: E402
from datamgmt.services.backups import backup_create, backup_run, full_dump_command  # noqa: E402

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "200000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def seed(messages: int) -> None:
    """Conversations of 500 messages each, and chunks, written in SQL (seconds, not minutes)."""
    conversations = max(1, messages // 500)
    with pg.connect(pg.django_conninfo()) as conn:
        conn.execute("TRUNCATE accounts_user CASCADE")
        conn.execute(
            "INSERT INTO accounts_user (password, is_superuser, username, first_name, last_name, "
            "email, is_staff, is_active, date_joined) VALUES ('!', false, 'bench', '', '', '', false, true, now())"
        )
        conn.execute(
            """
            INSERT INTO conversations_conversation (id, owner_id, title, workflow, model, system_prompt,
              metadata, agent_auto, summary, summarized_messages, message_count, tokens_in, tokens_out,
              cost, created_at, updated_at)
            SELECT md5('c' || g)::uuid, (SELECT id FROM accounts_user), 'conversation ' || g, 'basic', '',
              '', '{}', false, '', 0, 500, 0, 0, 0, now(), now()
            FROM generate_series(1, %s) g
            """,
            (conversations,),
        )
        conn.execute(
            """
            INSERT INTO conversations_message (id, conversation_id, position, role, content, tool_calls,
              status, error, model, tokens_in, tokens_out, cost, metadata, checkpoint_id,
              feedback_scale, feedback_comment, created_at)
            SELECT md5('m' || g)::uuid, md5('c' || (1 + (g - 1) / 500))::uuid, (g - 1) %% 500,
              CASE WHEN g %% 2 = 0 THEN 'assistant' ELSE 'user' END,
              repeat('A sentence of a chat message, about so long. ', 1 + g %% 8), '[]', 'complete',
              '', 'local', g %% 300, g %% 500, 0.000100, '{"n": 1}', '', '', '', now()
            FROM generate_series(1, %s) g
            """,
            (conversations * 500,),
        )
        conn.execute(
            """
            INSERT INTO knowledge_document (id, owner_id, title, filename, content_type, size, sha256,
              metadata, source, status, progress, failure_reason, embedding_space, created_at, updated_at)
            VALUES (md5('d')::uuid, (SELECT id FROM accounts_user), 'doc', 'doc.txt', 'text/plain', 1,
              repeat('0', 64), '{}', '\\x00', 'processed', 100, '', 'bench', now(), now())
            """
        )
        conn.execute(
            """
            INSERT INTO knowledge_chunk (document_id, position, section, content, token_count,
              content_hash, embedding)
            SELECT md5('d')::uuid, g, '', 'chunk text number ' || g, 4, md5('h' || g),
              (SELECT array_agg(random())::vector FROM generate_series(1, 384) WHERE g > 0)
            FROM generate_series(1, %s) g
            """,
            (max(1, messages // 20),),
        )
        conn.commit()


def bare_dump(target: Path) -> float:
    info = pg.django_conninfo()
    with pg.connect(info) as conn:
        tables = pg.tables(conn)
    env = pg.libpq_env(info)
    env.pop("_CHATTER_CONNINFO")
    command = [
        c for c in full_dump_command(info, snapshot=None, all_tables=tables) if c != "--verbose"
    ]
    started = time.perf_counter()
    with open(target, "wb") as out:
        subprocess.run(command, stdout=out, check=True, env=env)
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - started


def chatter_full(directory: Path, passphrase: str | None) -> tuple[float, int]:
    started = time.perf_counter()
    backup = backup_run(
        backup_id=backup_create(
            type="full", actor=None, passphrase=passphrase, directory=directory
        ).pk
    )
    return time.perf_counter() - started, int(backup.size or 0)


def export_peak_rss_kb(output: Path) -> tuple[float, int]:
    """Time and peak RSS (KB) of `export_data` in a process of its own. GNU time measures it:
    os.wait4's figure of a child forked from this (large) process would count the pages the
    fork shared with it."""
    report = output.with_suffix(".rss")
    started = time.perf_counter()
    subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(report), sys.executable, str(ROOT / "manage.py"),
         "export_data", "--scope", "full", "--format", "json", "--compression", "zstd",
         "--output", str(output)],
        env={**os.environ, "CHATTER_DB_NAME": DB_NAME},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )  # fmt: skip
    return time.perf_counter() - started, int(report.read_text().split()[-1])


def main() -> None:
    settings.DATAMGMT_SCRYPT_LOG_N = 18  # age's default work factor, as in production
    recreate_database(DB_NAME)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            print(f"seeding {MESSAGES // 10} messages for the small export...", flush=True)
            seed(MESSAGES // 10)
            small_time, small_rss = export_peak_rss_kb(work / "small.json.zst")
            print(f"seeding {MESSAGES} messages...", flush=True)
            seed(MESSAGES)
            with pg.connect(pg.django_conninfo()) as conn:
                size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            bare, plain, encrypted, sizes = [], [], [], {}
            for round_ in range(ROUNDS):
                bare.append(bare_dump(work / f"bare-{round_}.dump"))
                sizes["bare"] = (work / f"bare-{round_}.dump").stat().st_size
                seconds, sizes["plain"] = chatter_full(work / f"plain-{round_}", None)
                plain.append(seconds)
                seconds, sizes["encrypted"] = chatter_full(
                    work / f"enc-{round_}", "bench passphrase"
                )
                encrypted.append(seconds)
                for path in work.glob(f"*-{round_}*"):
                    subprocess.run(["rm", "-rf", str(path)], check=True)
                print(
                    f"round {round_ + 1}: bare {bare[-1]:.2f} s, chatter {plain[-1]:.2f} s, encrypted {encrypted[-1]:.2f} s",
                    flush=True,
                )
            with pg.connect(pg.django_conninfo()) as conn:
                conn.execute(
                    "UPDATE conversations_message SET content = 'changed' WHERE position % 100 = 0"
                )
                conn.commit()
            started = time.perf_counter()
            incremental = backup_run(
                backup_id=backup_create(type="incremental", actor=None, directory=work / "inc").pk
            )
            incremental_time = time.perf_counter() - started
            big_time, big_rss = export_peak_rss_kb(work / "big.json.zst")

        b, p, e = statistics.median(bare), statistics.median(plain), statistics.median(encrypted)
        print()
        print(
            f"database: {MESSAGES} messages, {MESSAGES // 20} chunks, {size / 1e6:.0f} MB on disk"
        )
        print("| measure | bare pg_dump | Chatter full | Chatter full, encrypted |")
        print("|---|---|---|---|")
        print(f"| median time ({ROUNDS} rounds) | {b:.2f} s | {p:.2f} s | {e:.2f} s |")
        print(f"| throughput vs pg_dump | 1.00x | **{b / p:.2f}x** | **{b / e:.2f}x** |")
        print(
            f"| file size | {sizes['bare'] / 1e6:.1f} MB | {sizes['plain'] / 1e6:.1f} MB | {sizes['encrypted'] / 1e6:.1f} MB |"
        )
        print(
            f"incremental after changing {incremental.manifest['changes'].get('conversations_message', {}).get('keys', 0)} "
            f"messages: {incremental_time:.2f} s ({incremental.size / 1e6:.2f} MB)"
        )
        print(
            f"export_data --scope full --format json: {MESSAGES // 10} messages {small_time:.1f} s, peak RSS "
            f"{small_rss / 1024:.0f} MB; {MESSAGES} messages {big_time:.1f} s, peak RSS {big_rss / 1024:.0f} MB "
            f"(ratio {big_rss / small_rss:.2f})"
        )
    finally:
        drop_database(DB_NAME)


if __name__ == "__main__":
    main()
