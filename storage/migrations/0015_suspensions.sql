-- Suspended users: who suspended whom, when and why, and who lifted it when. Rows are kept (history):
-- unsuspending sets lifted_at. Keyed by the user id as text, since a session token's subject need not
-- be a row of `users` (staff tokens minted by `run.py token`).
CREATE TABLE suspensions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       text NOT NULL,
    reason        text NOT NULL,
    suspended_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    suspended_by  text NOT NULL,
    lifted_at     timestamptz,
    lifted_by     text,
    CHECK ((lifted_at IS NULL) = (lifted_by IS NULL))
);
-- At most one suspension in force per user (two racing suspends: one wins), and what `auth` looks up:
-- an index of the suspensions in force only, however long the history grows.
CREATE UNIQUE INDEX suspensions_in_force ON suspensions (user_id) WHERE lifted_at IS NULL;
CREATE INDEX suspensions_user ON suspensions (user_id, id);
