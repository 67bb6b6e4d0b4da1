-- Every order has its chat room's row from its creation on (storage.orders.create), so that a
-- chat.sync can wait on the row's lock while a batch stores the room's very first message
-- (storage.chat.missed). Orders created before this have theirs added now.
INSERT INTO chat_rooms (order_id, last_seq) SELECT id, 0 FROM orders ON CONFLICT (order_id) DO NOTHING;
