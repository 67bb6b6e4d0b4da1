-- Moderation: a chat message hidden by staff keeps its (sealed) text for audit; members see it hidden.
ALTER TABLE chat_messages ADD COLUMN hidden_at timestamptz;
ALTER TABLE chat_messages ADD COLUMN hidden_by text;       -- the admin's id
ALTER TABLE chat_messages ADD COLUMN hidden_reason text;
