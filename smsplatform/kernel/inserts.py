"""One-statement inserts that lose a unique race quietly, without a savepoint.

``Model.objects.create`` inside ``transaction.atomic()`` is the usual way to insert a row that a
concurrent request may insert first: the savepoint keeps the outer transaction usable when the
unique constraint refuses the row. That is three round trips (SAVEPOINT, INSERT, RELEASE); on the
paths that run thousands of times a second (a governed write's idempotency key, an OTP's
verification) ``insert_unless_conflict`` is one: ``INSERT ... ON CONFLICT DO NOTHING RETURNING``
(PostgreSQL; ``INSERT OR IGNORE ... RETURNING`` on SQLite). On PostgreSQL a concurrent,
uncommitted insert of the same key makes it wait for that transaction's end, exactly as the
plain INSERT did: inserted when that one rolled back, nothing when it committed.
"""

from __future__ import annotations

from django.db import connections, router
from django.db.models import Model
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery

from smsplatform.kernel.commits import ASYNC_COMMIT
from smsplatform.kernel.roundtrips import Raw, statements_run


def insert_unless_conflict(obj: Model, *, unflushed: bool = False) -> bool:
    """Insert ``obj`` unless a unique constraint (any of its table's) already holds its values.
    True when inserted, with ``obj.pk`` set; False when another row holds them (nothing written,
    the caller's transaction still usable). No signals are sent: use it for models without
    receivers. (SQLite's OR IGNORE also skips a NOT NULL or CHECK failure; callers build valid
    rows, and their tests run on both databases.)

    ``unflushed``: also let the caller's transaction commit unflushed (whichever way the insert
    goes), its SET sent in the insert's round trip (smsplatform.kernel.commits says when that is
    safe)."""
    model = type(obj)
    meta = model._meta
    using = router.db_for_write(model, instance=obj)
    pk = meta.pk
    assert pk is not None
    fields = [
        field
        for field in meta.local_concrete_fields
        if not getattr(field, "generated", False) and not (field is pk and obj.pk is None and field.db_returning)
    ]
    query = InsertQuery(model, on_conflict=OnConflict.IGNORE)
    query.insert_values(fields, [obj])
    compiler = query.get_compiler(using=using)
    compiler.returning_fields = [pk]
    connection = connections[using]
    statements = [Raw(sql, params) for sql, params in compiler.as_sql()]
    if unflushed and connection.vendor == "postgresql":
        if not connection.in_atomic_block:
            raise RuntimeError("insert_unless_conflict(unflushed=True) runs inside the transaction it applies to.")
        statements.insert(0, Raw(ASYNC_COMMIT))
    rows = statements_run(statements, using=using)[-1]
    if not rows:
        return False
    value = rows[0][0]
    for converter in pk.get_db_converters(connection):
        value = converter(value, pk, connection)
    obj.pk = value
    obj._state.adding = False
    obj._state.db = using
    return True
