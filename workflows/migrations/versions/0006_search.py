"""full-text search over ticket subjects and conversations (ticket_search); ticket.updated_at indexed

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

PostgreSQL: a table ``ticket_search(ticket_id, document tsvector)`` with a GIN index, one row per
ticket: the subject weighted A, every conversation entry's body weighted B. Triggers keep it
current: a new entry is appended to its ticket's document, an edited or deleted entry (or a
changed subject) rebuilds that ticket's document. SQLite: an FTS5 table ``ticket_search`` with
one row per source, a ticket's subject at rowid ``-ticket.id`` and an entry's body at rowid
``entry.id``, kept current by triggers. workflows/search.py explains the choice and queries both.

Neither is in the SQLAlchemy metadata (workflows.search.include_name keeps autogenerate and the
models/migrations test away from them).

On SQLite, a later migration that rebuilds ``ticket`` or ``conversation_entry`` with
``batch_alter_table`` (copy and rename) drops these triggers with the old table: such a migration
must create them again (the statements are SQLITE_TRIGGERS below; copy them, migrations are frozen).
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SQLITE_TABLE = (
    "CREATE VIRTUAL TABLE ticket_search USING fts5("
    "ticket_id UNINDEXED, subject, body, tokenize = 'unicode61 remove_diacritics 2')"
)

SQLITE_TRIGGERS = (
    """CREATE TRIGGER ticket_search_ticket_insert AFTER INSERT ON ticket BEGIN
  INSERT INTO ticket_search (rowid, ticket_id, subject, body) VALUES (-NEW.id, NEW.id, NEW.subject, '');
END""",
    """CREATE TRIGGER ticket_search_ticket_update AFTER UPDATE OF subject ON ticket
WHEN OLD.subject IS NOT NEW.subject BEGIN
  DELETE FROM ticket_search WHERE rowid = -OLD.id;
  INSERT INTO ticket_search (rowid, ticket_id, subject, body) VALUES (-NEW.id, NEW.id, NEW.subject, '');
END""",
    """CREATE TRIGGER ticket_search_ticket_delete AFTER DELETE ON ticket BEGIN
  DELETE FROM ticket_search WHERE rowid = -OLD.id;
END""",
    """CREATE TRIGGER ticket_search_entry_insert AFTER INSERT ON conversation_entry BEGIN
  INSERT INTO ticket_search (rowid, ticket_id, subject, body) VALUES (NEW.id, NEW.ticket_id, '', NEW.body);
END""",
    """CREATE TRIGGER ticket_search_entry_update AFTER UPDATE OF body, ticket_id ON conversation_entry
WHEN OLD.body IS NOT NEW.body OR OLD.ticket_id IS NOT NEW.ticket_id BEGIN
  DELETE FROM ticket_search WHERE rowid = OLD.id;
  INSERT INTO ticket_search (rowid, ticket_id, subject, body) VALUES (NEW.id, NEW.ticket_id, '', NEW.body);
END""",
    """CREATE TRIGGER ticket_search_entry_delete AFTER DELETE ON conversation_entry BEGIN
  DELETE FROM ticket_search WHERE rowid = OLD.id;
END""",
)

SQLITE_BACKFILL = (
    "INSERT INTO ticket_search (rowid, ticket_id, subject, body) SELECT -id, id, subject, '' FROM ticket",
    "INSERT INTO ticket_search (rowid, ticket_id, subject, body) "
    "SELECT id, ticket_id, '', body FROM conversation_entry",
)

# A tsvector may not exceed 1 MB: each body contributes at most its first 100,000 characters,
# and a ticket's document stops growing near 900 kB (a reply must never fail on its index).
POSTGRESQL = (
    # No writer may slip between the backfill and the triggers (the migration is one transaction).
    "LOCK TABLE ticket, conversation_entry IN SHARE ROW EXCLUSIVE MODE",
    """CREATE TABLE ticket_search (
  ticket_id integer NOT NULL,
  document tsvector NOT NULL,
  CONSTRAINT pk_ticket_search PRIMARY KEY (ticket_id),
  CONSTRAINT fk_ticket_search_ticket_id_ticket FOREIGN KEY (ticket_id)
    REFERENCES ticket (id) ON DELETE CASCADE
)""",
    # plpgsql, not sql: an aggregate's state function is called once per entry, and plpgsql's
    # cached plan makes the backfill twice as fast.
    """CREATE FUNCTION ticket_search_add(document tsvector, body text) RETURNS tsvector
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  part tsvector := setweight(to_tsvector('simple'::regconfig, left(coalesce(body, ''), 100000)), 'B');
BEGIN
  IF pg_column_size(document) + pg_column_size(part) > 900000 THEN
    RETURN document;
  END IF;
  RETURN document || part;
END $$""",
    """CREATE AGGREGATE ticket_search_agg(text) (
  SFUNC = ticket_search_add, STYPE = tsvector, INITCOND = ''
)""",
    """CREATE FUNCTION ticket_search_subject(subject text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT setweight(to_tsvector('simple'::regconfig, coalesce(subject, '')), 'A')
$$""",
    """CREATE FUNCTION ticket_search_refresh(target integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  -- Lock first: the statements below then read every entry committed before the lock was ours.
  PERFORM 1 FROM ticket_search WHERE ticket_id = target FOR UPDATE;
  INSERT INTO ticket_search (ticket_id, document)
  SELECT t.id, ticket_search_subject(t.subject) || coalesce(
           (SELECT ticket_search_agg(e.body ORDER BY e.id) FROM conversation_entry AS e
            WHERE e.ticket_id = t.id), '')
  FROM ticket AS t WHERE t.id = target
  ON CONFLICT (ticket_id) DO UPDATE SET document = excluded.document;
END $$""",
    """CREATE FUNCTION ticket_search_on_ticket() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO ticket_search (ticket_id, document) VALUES (NEW.id, ticket_search_subject(NEW.subject))
    ON CONFLICT (ticket_id) DO NOTHING;
  ELSE
    PERFORM ticket_search_refresh(NEW.id);
  END IF;
  RETURN NULL;
END $$""",
    """CREATE FUNCTION ticket_search_on_entry_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE ticket_search SET document = ticket_search_add(document, NEW.body) WHERE ticket_id = NEW.ticket_id;
  IF NOT FOUND THEN
    PERFORM ticket_search_refresh(NEW.ticket_id);
  END IF;
  RETURN NULL;
END $$""",
    """CREATE FUNCTION ticket_search_on_entries_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  changed integer;
BEGIN
  IF TG_OP = 'DELETE' THEN
    FOR changed IN SELECT DISTINCT ticket_id FROM old_rows ORDER BY 1 LOOP
      PERFORM ticket_search_refresh(changed);
    END LOOP;
  ELSE
    FOR changed IN
      SELECT o.ticket_id FROM old_rows AS o JOIN new_rows AS n ON n.id = o.id
      WHERE o.body IS DISTINCT FROM n.body OR o.ticket_id IS DISTINCT FROM n.ticket_id
      UNION
      SELECT n.ticket_id FROM old_rows AS o JOIN new_rows AS n ON n.id = o.id
      WHERE o.body IS DISTINCT FROM n.body OR o.ticket_id IS DISTINCT FROM n.ticket_id
      ORDER BY 1
    LOOP
      PERFORM ticket_search_refresh(changed);
    END LOOP;
  END IF;
  RETURN NULL;
END $$""",
    """INSERT INTO ticket_search (ticket_id, document)
SELECT t.id, ticket_search_subject(t.subject) || coalesce(e.document, '')
FROM ticket AS t
LEFT JOIN (SELECT ticket_id, ticket_search_agg(body ORDER BY id) AS document
           FROM conversation_entry GROUP BY ticket_id) AS e ON e.ticket_id = t.id""",
    # Built after the backfill: one bulk build is much faster than 100,000 inserts into a GIN index.
    "SET LOCAL maintenance_work_mem = '256MB'",
    "CREATE INDEX ix_ticket_search_document ON ticket_search USING gin (document)",
    """CREATE TRIGGER ticket_search_ticket_insert AFTER INSERT ON ticket
FOR EACH ROW EXECUTE FUNCTION ticket_search_on_ticket()""",
    """CREATE TRIGGER ticket_search_ticket_update AFTER UPDATE OF subject ON ticket
FOR EACH ROW WHEN (OLD.subject IS DISTINCT FROM NEW.subject) EXECUTE FUNCTION ticket_search_on_ticket()""",
    """CREATE TRIGGER ticket_search_entry_insert AFTER INSERT ON conversation_entry
FOR EACH ROW EXECUTE FUNCTION ticket_search_on_entry_insert()""",
    """CREATE TRIGGER ticket_search_entry_update AFTER UPDATE ON conversation_entry
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION ticket_search_on_entries_changed()""",
    """CREATE TRIGGER ticket_search_entry_delete AFTER DELETE ON conversation_entry
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION ticket_search_on_entries_changed()""",
)

POSTGRESQL_DOWN = (
    "DROP TRIGGER IF EXISTS ticket_search_entry_delete ON conversation_entry",
    "DROP TRIGGER IF EXISTS ticket_search_entry_update ON conversation_entry",
    "DROP TRIGGER IF EXISTS ticket_search_entry_insert ON conversation_entry",
    "DROP TRIGGER IF EXISTS ticket_search_ticket_update ON ticket",
    "DROP TRIGGER IF EXISTS ticket_search_ticket_insert ON ticket",
    "DROP FUNCTION IF EXISTS ticket_search_on_entries_changed()",
    "DROP FUNCTION IF EXISTS ticket_search_on_entry_insert()",
    "DROP FUNCTION IF EXISTS ticket_search_on_ticket()",
    "DROP FUNCTION IF EXISTS ticket_search_refresh(integer)",
    "DROP AGGREGATE IF EXISTS ticket_search_agg(text)",
    "DROP FUNCTION IF EXISTS ticket_search_subject(text)",
    "DROP FUNCTION IF EXISTS ticket_search_add(tsvector, text)",
    "DROP TABLE IF EXISTS ticket_search",
)


def upgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ticket_updated_at"), ["updated_at"], unique=False)
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        statements: tuple[str, ...] = POSTGRESQL
    elif dialect == "sqlite":
        statements = (SQLITE_TABLE, *SQLITE_TRIGGERS, *SQLITE_BACKFILL)
    else:  # pragma: no cover - the desk supports these two
        raise NotImplementedError(f"full-text search is not implemented for {dialect}")
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for statement in POSTGRESQL_DOWN:
            op.execute(statement)
    elif dialect == "sqlite":
        for name in (
            "ticket_search_entry_delete",
            "ticket_search_entry_update",
            "ticket_search_entry_insert",
            "ticket_search_ticket_delete",
            "ticket_search_ticket_update",
            "ticket_search_ticket_insert",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS ticket_search")
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ticket_updated_at"))
