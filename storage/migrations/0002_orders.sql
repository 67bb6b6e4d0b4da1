-- The catalog, technicians' duty state, orders, their timeline, declines and attachments.
-- User ids are token subjects (text): staff accounts may come from outside the users table.
CREATE TABLE brands (
    id    text PRIMARY KEY,                -- slug, e.g. 'whirlpool'
    name  text NOT NULL
);
CREATE TABLE service_types (
    id    text PRIMARY KEY,                -- 'repair', 'installation', 'maintenance'
    name  text NOT NULL
);
CREATE TABLE skus (
    id        text PRIMARY KEY,            -- the model number
    brand_id  text NOT NULL REFERENCES brands (id),
    category  text NOT NULL,               -- 'refrigerator', 'washer', ...
    name      text NOT NULL
);
CREATE TABLE catalog_prices (
    sku_id        text NOT NULL REFERENCES skus (id),
    service_type  text NOT NULL REFERENCES service_types (id),
    price_cents   integer NOT NULL CHECK (price_cents > 0),
    currency      text NOT NULL DEFAULT 'usd',
    PRIMARY KEY (sku_id, service_type)
);
CREATE TABLE merchant_brands (
    merchant_id  text NOT NULL,
    brand_id     text NOT NULL REFERENCES brands (id),
    PRIMARY KEY (merchant_id, brand_id)
);

CREATE TABLE technicians (
    user_id     text PRIMARY KEY,
    on_duty     boolean NOT NULL DEFAULT false,
    brands      text[] NOT NULL DEFAULT '{}',    -- empty: every brand
    services    text[] NOT NULL DEFAULT '{}',    -- empty: every service type
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id                      uuid PRIMARY KEY,
    consumer_id             text NOT NULL,
    created_by              text NOT NULL,       -- the consumer, or a merchant on their behalf
    brand_id                text NOT NULL REFERENCES brands (id),
    sku_id                  text NOT NULL REFERENCES skus (id),
    service_type            text NOT NULL REFERENCES service_types (id),
    description             text NOT NULL,
    address_enc             bytea NOT NULL,      -- storage.crypto envelope
    lat                     double precision NOT NULL,
    lng                     double precision NOT NULL,
    attachments             uuid[] NOT NULL DEFAULT '{}',
    window_start            timestamptz,
    window_end              timestamptz,
    price_cents             integer NOT NULL,
    currency                text NOT NULL,
    state                   text NOT NULL DEFAULT 'open'
                            CHECK (state IN ('open', 'accepted', 'en_route', 'in_service', 'completed', 'cancelled')),
    technician_id           text,
    payout_cents            integer,
    completion_attachments  uuid[] NOT NULL DEFAULT '{}',
    completion_note         text,
    rating                  smallint CHECK (rating BETWEEN 1 AND 5),
    rating_comment          text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_consumer ON orders (consumer_id, created_at DESC, id DESC);
CREATE INDEX orders_technician ON orders (technician_id, created_at DESC, id DESC);
CREATE INDEX orders_brand ON orders (brand_id, created_at DESC, id DESC);
CREATE INDEX orders_open ON orders (created_at) WHERE state = 'open';

CREATE TABLE order_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    uuid NOT NULL REFERENCES orders (id),
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_id    text NOT NULL,
    actor_role  text NOT NULL,
    from_state  text,
    to_state    text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX order_events_order ON order_events (order_id, id);

CREATE TABLE order_declines (
    technician_id  text NOT NULL,
    order_id       uuid NOT NULL REFERENCES orders (id),
    at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (technician_id, order_id)
);

CREATE TABLE attachments (
    id            uuid PRIMARY KEY,
    owner_id      text NOT NULL,
    sha256        bytea NOT NULL,               -- the blob's address in the blob store
    content_type  text NOT NULL,
    size          bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- A realistic demo catalog; the back office manages it later.
INSERT INTO brands (id, name) VALUES
    ('whirlpool', 'Whirlpool'), ('samsung', 'Samsung'), ('lg', 'LG'), ('ge', 'GE Appliances'),
    ('bosch', 'Bosch'), ('frigidaire', 'Frigidaire'), ('maytag', 'Maytag'), ('kitchenaid', 'KitchenAid'),
    ('carrier', 'Carrier'), ('rheem', 'Rheem');
INSERT INTO service_types (id, name) VALUES
    ('repair', 'Repair'), ('installation', 'Installation'), ('maintenance', 'Maintenance');
INSERT INTO skus (id, brand_id, category, name) VALUES
    ('WRF535SWHZ', 'whirlpool', 'refrigerator', 'Whirlpool 33-inch French door refrigerator'),
    ('WTW5000DW', 'whirlpool', 'washer', 'Whirlpool top-load washer 4.3 cu ft'),
    ('WF45R6100AW', 'samsung', 'washer', 'Samsung front-load washer 4.5 cu ft'),
    ('RF28R7351SR', 'samsung', 'refrigerator', 'Samsung 4-door French door refrigerator'),
    ('DVE45R6100W', 'samsung', 'dryer', 'Samsung electric dryer 7.5 cu ft'),
    ('LDFN4542S', 'lg', 'dishwasher', 'LG front-control dishwasher with QuadWash'),
    ('LRMVS3006S', 'lg', 'refrigerator', 'LG InstaView door-in-door refrigerator'),
    ('JGB735SPSS', 'ge', 'range', 'GE 30-inch free-standing gas range'),
    ('GDT665SSNSS', 'ge', 'dishwasher', 'GE top-control dishwasher'),
    ('SHPM88Z75N', 'bosch', 'dishwasher', 'Bosch 800 Series dishwasher'),
    ('HBL8453UC', 'bosch', 'oven', 'Bosch 800 Series 30-inch double wall oven'),
    ('FFTR1835VW', 'frigidaire', 'refrigerator', 'Frigidaire top-freezer refrigerator 18.3 cu ft'),
    ('FFEF3054TS', 'frigidaire', 'range', 'Frigidaire 30-inch electric range'),
    ('MVW6230HW', 'maytag', 'washer', 'Maytag top-load washer 4.7 cu ft'),
    ('MED6230HW', 'maytag', 'dryer', 'Maytag electric dryer 7.4 cu ft'),
    ('KDTM404KPS', 'kitchenaid', 'dishwasher', 'KitchenAid 44 dBA dishwasher'),
    ('KRFF507HPS', 'kitchenaid', 'refrigerator', 'KitchenAid 36-inch French door refrigerator'),
    ('24ACC636A003', 'carrier', 'air_conditioner', 'Carrier Comfort 13 SEER central air conditioner'),
    ('XE50M06ST45U1', 'rheem', 'water_heater', 'Rheem Performance Platinum 50 gal electric water heater'),
    ('XG40T06EC36U1', 'rheem', 'water_heater', 'Rheem Performance 40 gal gas water heater');
INSERT INTO catalog_prices (sku_id, service_type, price_cents)
SELECT s.id, t.id,
       (CASE s.category WHEN 'air_conditioner' THEN 18900 WHEN 'water_heater' THEN 15900
                        WHEN 'refrigerator' THEN 13900 WHEN 'oven' THEN 12900 ELSE 11900 END)
       * (CASE t.id WHEN 'repair' THEN 100 WHEN 'installation' THEN 150 ELSE 70 END) / 100
FROM skus s CROSS JOIN service_types t;
