-- The back office's audit log: every action of a merchant or an admin, and every read of personal data.
-- Append-only: the gateway's role may not change or delete a row (revoked), and a trigger refuses it
-- for every role, superusers included (the embedded PostgreSQL connects as its superuser).
CREATE TABLE admin_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_id     text NOT NULL,
    actor_role   text NOT NULL,
    action       text NOT NULL,               -- the operation ('catalog.sku.save') or a read ('read.transcript')
    target_kind  text,                        -- 'order', 'user', 'sku', 'brand', ...
    target_id    text,
    outcome      text NOT NULL,               -- 'ok' or the error code answered
    request      jsonb NOT NULL DEFAULT '{}'  -- the request, secrets and personal fields redacted
);
CREATE INDEX admin_log_actor ON admin_log (actor_id, id);
CREATE INDEX admin_log_target ON admin_log (target_id, id);
CREATE INDEX admin_log_action ON admin_log (action, id);

CREATE FUNCTION admin_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'admin_log is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER admin_log_no_update BEFORE UPDATE OR DELETE ON admin_log
    FOR EACH ROW EXECUTE FUNCTION admin_log_append_only();
CREATE TRIGGER admin_log_no_truncate BEFORE TRUNCATE ON admin_log
    FOR EACH STATEMENT EXECUTE FUNCTION admin_log_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON admin_log FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE ON admin_log FROM CURRENT_USER;
