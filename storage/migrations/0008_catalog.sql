-- The catalog managed from the back office: localized names, retirement, categories, troubleshooting
-- guides, a version every change bumps (each gateway's cache compares it) and the history of changes.
ALTER TABLE brands ADD COLUMN names jsonb NOT NULL DEFAULT '{}',      -- {"es": ..., "zh-Hans": ...}; `name` is English
                   ADD COLUMN retired boolean NOT NULL DEFAULT false;
ALTER TABLE service_types ADD COLUMN names jsonb NOT NULL DEFAULT '{}';
ALTER TABLE skus ADD COLUMN names jsonb NOT NULL DEFAULT '{}',
                 ADD COLUMN retired boolean NOT NULL DEFAULT false;
ALTER TABLE catalog_prices ADD COLUMN retired boolean NOT NULL DEFAULT false;

CREATE TABLE categories (
    id     text PRIMARY KEY,                 -- 'refrigerator', 'washer', ...
    name   text NOT NULL,
    names  jsonb NOT NULL DEFAULT '{}'
);
INSERT INTO categories (id, name)
SELECT DISTINCT category, initcap(replace(category, '_', ' ')) FROM skus;
ALTER TABLE skus ADD CONSTRAINT skus_category_fkey FOREIGN KEY (category) REFERENCES categories (id);

CREATE TABLE catalog_guides (
    id          uuid PRIMARY KEY,
    brand_id    text NOT NULL REFERENCES brands (id),
    sku_id      text REFERENCES skus (id),     -- null: the whole brand
    locale      text NOT NULL,
    title       text NOT NULL,
    body        text NOT NULL,                 -- markdown
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX catalog_guides_brand ON catalog_guides (brand_id, sku_id);

-- One row: bumped in the transaction of every change, read by every catalog.list.
CREATE TABLE catalog_version (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    version  bigint NOT NULL
);
INSERT INTO catalog_version (version) VALUES (1);

CREATE TABLE catalog_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_id    text NOT NULL,
    actor_role  text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('brand', 'category', 'sku', 'price', 'guide', 'merchant_brands')),
    key         text NOT NULL,               -- brand id, sku id, 'sku/service_type', guide id, merchant id
    brand_id    text,                        -- whose brand it concerns (merchants see theirs); null: categories, memberships
    before      jsonb,                       -- null: created
    after       jsonb NOT NULL
);
CREATE INDEX catalog_history_brand ON catalog_history (brand_id, id);

-- The demo catalog's names in the other shipped languages (brands keep their own names).
UPDATE service_types SET names = v.names FROM (VALUES
    ('repair', '{"es": "Reparación", "zh-Hans": "维修"}'::jsonb),
    ('installation', '{"es": "Instalación", "zh-Hans": "安装"}'::jsonb),
    ('maintenance', '{"es": "Mantenimiento", "zh-Hans": "保养"}'::jsonb)) AS v (id, names)
WHERE service_types.id = v.id;
UPDATE categories SET names = v.names FROM (VALUES
    ('refrigerator', '{"es": "Refrigerador", "zh-Hans": "冰箱"}'::jsonb),
    ('washer', '{"es": "Lavadora", "zh-Hans": "洗衣机"}'::jsonb),
    ('dryer', '{"es": "Secadora", "zh-Hans": "干衣机"}'::jsonb),
    ('dishwasher', '{"es": "Lavavajillas", "zh-Hans": "洗碗机"}'::jsonb),
    ('range', '{"es": "Estufa", "zh-Hans": "炉灶"}'::jsonb),
    ('oven', '{"es": "Horno", "zh-Hans": "烤箱"}'::jsonb),
    ('air_conditioner', '{"es": "Aire acondicionado", "zh-Hans": "空调"}'::jsonb),
    ('water_heater', '{"es": "Calentador de agua", "zh-Hans": "热水器"}'::jsonb)) AS v (id, names)
WHERE categories.id = v.id;
