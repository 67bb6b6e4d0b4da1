-- What admin.summary reads, kept where one index range scan finds it (storage.summary).
--
-- The moments of an order's timeline the summary measures, on the order itself: its first opening,
-- first acceptance, latest acceptance (of the technician who has or had the job) and completion,
-- and how many times it was accepted. Reading them from order_events costs a lookup per order
-- (a month of a large brand: tens of thousands), so a trigger sets them in the same row version
-- as each state change, whatever statement makes it (storage.orders' transitions are unchanged).
ALTER TABLE orders ADD COLUMN opened_at timestamptz,
                   ADD COLUMN accepted_at timestamptz,
                   ADD COLUMN assigned_at timestamptz,
                   ADD COLUMN completed_at timestamptz,
                   ADD COLUMN accepts integer NOT NULL DEFAULT 0;

CREATE FUNCTION orders_keep_moments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN  -- an order starts open or awaiting its payment; a row copied in keeps its moments
        IF NEW.state = 'open' THEN
            NEW.opened_at := coalesce(NEW.opened_at, clock_timestamp());
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.state IS NOT DISTINCT FROM OLD.state THEN
        RETURN NEW;
    END IF;
    IF NEW.state = 'open' THEN
        NEW.opened_at := coalesce(NEW.opened_at, clock_timestamp());
    ELSIF NEW.state = 'accepted' THEN
        NEW.accepted_at := coalesce(NEW.accepted_at, clock_timestamp());
        NEW.assigned_at := clock_timestamp();
        NEW.accepts := NEW.accepts + 1;
    ELSIF NEW.state = 'completed' THEN
        NEW.completed_at := coalesce(NEW.completed_at, clock_timestamp());
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER orders_moments BEFORE INSERT OR UPDATE OF state ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_keep_moments();

-- Orders made before this migration: the same moments from their timelines.
UPDATE orders o SET opened_at = e.opened, accepted_at = e.accepted, assigned_at = e.assigned,
                    completed_at = e.completed, accepts = e.accepts
FROM (SELECT order_id, min(at) FILTER (WHERE to_state = 'open') AS opened,
             min(at) FILTER (WHERE to_state = 'accepted') AS accepted,
             max(at) FILTER (WHERE to_state = 'accepted') AS assigned,
             min(at) FILTER (WHERE to_state = 'completed') AS completed,
             count(*) FILTER (WHERE to_state = 'accepted') AS accepts
      FROM order_events GROUP BY order_id) e
WHERE e.order_id = o.id;

-- A brand's orders of a range, with everything the summary needs of them, from the index alone
-- (once vacuumed); every brand's range (admins) uses orders_created (0011). Declines by order.
CREATE INDEX orders_summary ON orders (brand_id, created_at)
    INCLUDE (id, sku_id, state, rating, opened_at, accepted_at, assigned_at, completed_at, accepts);
CREATE INDEX order_declines_order ON order_declines (order_id);
