-- The "Help with AI" troubleshooter: structured troubleshooting guides searched by full text, the
-- consumers' conversations (texts and answers sealed, kept for audit), order drafts and the link
-- from an order to the conversation it came from.

-- Full-text search per language: PostgreSQL's 'english' and 'spanish' configurations; Chinese has
-- no spaces between words, so zh-Hans text is cut into overlapping pairs of characters (bigrams:
-- 冰箱不制冷 -> 冰箱 箱不 不制 制冷) indexed with the 'simple' configuration. A two-character word, the
-- most common length in Chinese, then matches itself wherever it occurs, without a segmenter.
CREATE FUNCTION ai_bigrams(t text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT regexp_replace(t, '[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]+', ' ', 'g') || ' ' || coalesce((
        SELECT string_agg(substr(t, i, 2), ' ') FROM generate_series(1, length(t) - 1) AS i
        WHERE substr(t, i, 2) ~ '^[\u4e00-\u9fff]{2}$'), '')
$$;

-- The lexemes of a text in a locale's language (guides are indexed, consumers' words are queried, alike).
CREATE FUNCTION ai_lexemes(locale text, t text) RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE locale WHEN 'es' THEN to_tsvector('spanish'::regconfig, coalesce(t, ''))
                       WHEN 'zh-Hans' THEN to_tsvector('simple'::regconfig, ai_bigrams(coalesce(t, '')))
                       ELSE to_tsvector('english'::regconfig, coalesce(t, '')) END
$$;

-- A query matching any of the words (plainto_tsquery wants all of them: a consumer's sentence
-- rarely holds every word of a guide); ts_rank then ranks by how many and how often.
CREATE FUNCTION ai_query(locale text, t text) RETURNS tsquery LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce((SELECT string_agg(quote_literal(l), ' | ') FROM unnest(tsvector_to_array(ai_lexemes(locale, t))) AS l
                     WHERE l !~ '[\\'']')::tsquery, ''::tsquery)
$$;

-- How many distinct lexemes two texts share (the consumer's reply against a guide's `call_when`).
CREATE FUNCTION ai_shared(locale text, a text, b text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT count(*)::integer FROM (SELECT unnest(tsvector_to_array(ai_lexemes(locale, a)))
                                   INTERSECT SELECT unnest(tsvector_to_array(ai_lexemes(locale, b)))) AS both_
$$;

-- Guides gain the structure the offline engine reads. A guide is for a brand (optionally one of
-- its SKUs, optionally one category of its products) or, with no brand, for a whole category.
ALTER TABLE catalog_guides
    ALTER COLUMN brand_id DROP NOT NULL,
    ADD COLUMN category text REFERENCES categories (id),
    ADD COLUMN symptoms text NOT NULL DEFAULT '',
    ADD COLUMN checks jsonb NOT NULL DEFAULT '[]',       -- [{text, look_for, safety: safe|caution|technician}], in order
    ADD COLUMN call_when text NOT NULL DEFAULT '',
    ADD COLUMN likely_parts text[] NOT NULL DEFAULT '{}',
    ADD COLUMN urgency text NOT NULL DEFAULT 'normal' CHECK (urgency IN ('low', 'normal', 'high', 'emergency')),
    ADD CONSTRAINT catalog_guides_scope CHECK (brand_id IS NOT NULL OR category IS NOT NULL);
ALTER TABLE catalog_guides ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(ai_lexemes(locale, title), 'A') || setweight(ai_lexemes(locale, symptoms), 'A')
    || setweight(ai_lexemes(locale, body), 'C')) STORED;
CREATE INDEX catalog_guides_search ON catalog_guides USING gin (search);
CREATE INDEX catalog_guides_category ON catalog_guides (category, locale) WHERE brand_id IS NULL;

CREATE TABLE ai_conversations (
    id                 uuid PRIMARY KEY,
    consumer_id        text NOT NULL,
    brand_id           text NOT NULL REFERENCES brands (id),
    sku_id             text NOT NULL REFERENCES skus (id),
    locale             text NOT NULL,
    state              text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'ended')),
    outcome            text CHECK (outcome IN ('fixed', 'give_up', 'ordered')),
    turns              integer NOT NULL DEFAULT 1,          -- the newest turn's number
    answering_since    timestamptz,                         -- an answer is being made (one at a time)
    engine             text,                                -- the last engine that answered
    prompt_tokens      bigint NOT NULL DEFAULT 0,
    completion_tokens  bigint NOT NULL DEFAULT 0,
    cost_usd           double precision NOT NULL DEFAULT 0,
    order_id           uuid,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((state = 'ended') = (outcome IS NOT NULL))
);
CREATE INDEX ai_conversations_consumer ON ai_conversations (consumer_id, created_at DESC, id DESC);

-- One turn: the consumer's words and the assistant's answer to them (sealed, storage.crypto).
CREATE TABLE ai_turns (
    conversation_id   uuid NOT NULL REFERENCES ai_conversations (id),
    turn              integer NOT NULL,
    text_enc          bytea NOT NULL,
    attachments       uuid[] NOT NULL DEFAULT '{}',
    wants_technician  boolean NOT NULL DEFAULT false,
    answer_enc        bytea,                                -- AiAnswer as JSON; null while being made
    safety            text CHECK (safety IN ('none', 'input_hazard', 'output_gated')),
    engine            text,                                 -- null: the safety gate answered, no engine asked
    fallback          text,                                 -- why the fallback engine answered
    draft_id          uuid,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    answered_at       timestamptz,
    PRIMARY KEY (conversation_id, turn)
);

-- An order draft from a technician_needed answer; `order_id` once an order.create used it.
CREATE TABLE ai_drafts (
    id               uuid PRIMARY KEY,
    conversation_id  uuid NOT NULL REFERENCES ai_conversations (id),
    turn             integer NOT NULL,
    consumer_id      text NOT NULL,
    service_type     text NOT NULL,
    draft_enc        bytea NOT NULL,                        -- AiDraft as JSON
    order_id         uuid,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

ALTER TABLE orders ADD COLUMN ai_conversation_id uuid REFERENCES ai_conversations (id),
                   ADD COLUMN ai_summary_enc bytea;     -- the draft's summary, tried, parts, urgency (sealed)

-- Seed guides for every category of the demo catalog, in the three shipped languages.
INSERT INTO catalog_guides (id, brand_id, category, locale, title, symptoms, body, checks, call_when, likely_parts, urgency)
SELECT gen_random_uuid(), NULL, g.category, g.locale, g.title, g.symptoms, g.symptoms, g.checks::jsonb, g.call_when,
       g.likely_parts::text[], g.urgency
FROM (VALUES
-- refrigerator
('refrigerator', 'en', 'Refrigerator not cooling',
 'The fridge is warm, not cold enough, not cooling, the freezer thaws, food spoils, the temperature is too high.',
 '[{"text": "Check that the fridge is plugged in and the interior light comes on; if not, reset the tripped breaker in the electrical panel.", "look_for": "The light is on and you hear the compressor or fans run.", "safety": "safe"},
   {"text": "Check the thermostat dial or display is set to 37 °F (3 °C) for the fridge and 0 °F (-18 °C) for the freezer.", "look_for": "The setting is not off or at the warmest position.", "safety": "safe"},
   {"text": "Make sure food is not blocking the air vents inside, and the door closes and seals all around (close it on a sheet of paper: it should hold).", "look_for": "Air flows from the vents and the paper does not slide out.", "safety": "safe"},
   {"text": "Unplug the fridge, pull it out and vacuum the condenser coils at the back or behind the bottom grille, then plug it back in.", "look_for": "The coils are free of dust; the fridge is colder after a few hours.", "safety": "caution"},
   {"text": "Check whether the freezer fan runs when you press the door switch, and whether frost covers the back panel of the freezer.", "look_for": "The fan spins; thick frost means a defrost problem.", "safety": "safe"}]',
 'The compressor clicks on and off, hums without starting, or frost builds up on the back panel, or the fridge is warm again a day after cleaning.',
 '{compressor start relay,evaporator fan motor,defrost heater,thermostat}', 'high'),
('refrigerator', 'es', 'El refrigerador no enfría',
 'El refrigerador está caliente, no enfría lo suficiente, el congelador se descongela, la comida se echa a perder, la temperatura es alta.',
 '[{"text": "Comprueba que el refrigerador está enchufado y la luz interior se enciende; si no, reinicia el interruptor automático disparado en el tablero eléctrico.", "look_for": "La luz se enciende y se oye el compresor o los ventiladores.", "safety": "safe"},
   {"text": "Comprueba que el termostato está en 3 °C para el refrigerador y -18 °C para el congelador.", "look_for": "El ajuste no está apagado ni en la posición más cálida.", "safety": "safe"},
   {"text": "Asegúrate de que la comida no tapa las rejillas de aire y de que la puerta cierra y sella bien (ciérrala sobre una hoja de papel: debe sujetarla).", "look_for": "Sale aire de las rejillas y el papel no se desliza.", "safety": "safe"},
   {"text": "Desenchufa el refrigerador, sepáralo de la pared y aspira los serpentines del condensador detrás o bajo la rejilla inferior; luego vuelve a enchufarlo.", "look_for": "Los serpentines quedan sin polvo y enfría más en unas horas.", "safety": "caution"},
   {"text": "Comprueba si el ventilador del congelador gira al pulsar el interruptor de la puerta y si hay escarcha en el panel trasero del congelador.", "look_for": "El ventilador gira; mucha escarcha indica un problema de descongelación.", "safety": "safe"}]',
 'El compresor hace clic y se apaga, zumba sin arrancar, o se acumula escarcha en el panel trasero, o vuelve a calentarse un día después de limpiarlo.',
 '{relé de arranque del compresor,motor del ventilador del evaporador,resistencia de descongelación,termostato}', 'high'),
('refrigerator', 'zh-Hans', '冰箱不制冷',
 '冰箱不冷，制冷效果差，冷藏室温度高，冷冻室化冰，食物变质。',
 '[{"text": "检查冰箱插头是否插好、内部照明灯是否亮；如果不亮，到配电箱把跳闸的断路器复位。", "look_for": "灯亮，并能听到压缩机或风扇运转。", "safety": "safe"},
   {"text": "检查温控器设置：冷藏室3°C，冷冻室-18°C。", "look_for": "没有设在关闭或最弱档。", "safety": "safe"},
   {"text": "确认食物没有挡住出风口，门能关严（把一张纸夹在门缝里，纸应抽不出来）。", "look_for": "出风口有风，纸被夹住。", "safety": "safe"},
   {"text": "拔下电源，把冰箱拉出来，用吸尘器清洁背面或底部格栅后的冷凝器盘管，然后重新插上电源。", "look_for": "盘管没有灰尘，几小时后更冷。", "safety": "caution"},
   {"text": "按下门灯开关时看冷冻室风扇是否转动，冷冻室后板是否结满霜。", "look_for": "风扇转动；厚霜说明化霜有问题。", "safety": "safe"}]',
 '压缩机反复咔哒启停、嗡嗡响却不启动，或者后板结厚霜，或者清洁后一天又不冷。',
 '{压缩机启动继电器,蒸发器风扇电机,化霜加热器,温控器}', 'high'),
-- washer
('washer', 'en', 'Washer does not drain or spin',
 'The washer will not drain, water stays in the drum, it does not spin, clothes come out soaking wet, it stops mid-cycle, a drain error code.',
 '[{"text": "Cancel the cycle, then run a Drain & Spin cycle on its own.", "look_for": "Whether the pump hums and the water goes down.", "safety": "safe"},
   {"text": "Check the drain hose behind the washer is not kinked, squashed or pushed more than 8 inches into the standpipe.", "look_for": "A smooth hose with no sharp bends.", "safety": "safe"},
   {"text": "Put towels down, open the small door at the bottom front and clean the drain pump filter (coin trap); water will come out.", "look_for": "Coins, lint or a sock stuck in the filter.", "safety": "caution"},
   {"text": "Spread the laundry evenly: a single heavy item throws the load off balance and stops the spin.", "look_for": "The drum spins up once the load is balanced.", "safety": "safe"},
   {"text": "Reset the washer: unplug it for one minute, plug it back in and start a new cycle.", "look_for": "The error code is gone.", "safety": "safe"}]',
 'The drain pump hums loudly or makes no sound at all, or the drum turns by hand with a grinding noise, or the lid lock clicks but the washer never starts.',
 '{drain pump,lid lock switch,drive belt,motor coupling}', 'normal'),
('washer', 'es', 'La lavadora no desagua ni centrifuga',
 'La lavadora no desagua, queda agua en el tambor, no centrifuga, la ropa sale empapada, se detiene a mitad del ciclo, un código de error de desagüe.',
 '[{"text": "Cancela el ciclo y ejecuta solo un ciclo de desagüe y centrifugado.", "look_for": "Si la bomba zumba y el agua baja.", "safety": "safe"},
   {"text": "Comprueba que la manguera de desagüe detrás de la lavadora no está doblada, aplastada ni metida más de 20 cm en el tubo de desagüe.", "look_for": "Una manguera lisa sin curvas cerradas.", "safety": "safe"},
   {"text": "Pon toallas en el suelo, abre la tapita inferior delantera y limpia el filtro de la bomba de desagüe; saldrá agua.", "look_for": "Monedas, pelusa o un calcetín atascado en el filtro.", "safety": "caution"},
   {"text": "Reparte la ropa de forma uniforme: una sola prenda pesada desequilibra la carga y detiene el centrifugado.", "look_for": "El tambor centrifuga cuando la carga está equilibrada.", "safety": "safe"},
   {"text": "Reinicia la lavadora: desenchúfala un minuto, vuelve a enchufarla y empieza un ciclo nuevo.", "look_for": "El código de error desaparece.", "safety": "safe"}]',
 'La bomba de desagüe zumba fuerte o no suena en absoluto, o el tambor gira a mano con ruido de roce, o el bloqueo de la tapa hace clic pero la lavadora nunca arranca.',
 '{bomba de desagüe,interruptor de bloqueo de la tapa,correa,acoplamiento del motor}', 'normal'),
('washer', 'zh-Hans', '洗衣机不排水或不脱水',
 '洗衣机不排水，桶里有积水，不脱水，衣服湿透，洗到一半停机，显示排水故障代码。',
 '[{"text": "取消当前程序，单独运行一次排水脱水程序。", "look_for": "排水泵是否有嗡嗡声，水位是否下降。", "safety": "safe"},
   {"text": "检查洗衣机后面的排水管没有打折、被压扁，插入下水管不超过20厘米。", "look_for": "排水管顺直，没有急弯。", "safety": "safe"},
   {"text": "在地上铺毛巾，打开前面底部的小门，清理排水泵过滤器；会有水流出。", "look_for": "过滤器里卡着硬币、线头或袜子。", "safety": "caution"},
   {"text": "把衣物摊均匀：单件厚重衣物会导致不平衡而停止脱水。", "look_for": "衣物平衡后滚筒能正常脱水。", "safety": "safe"},
   {"text": "重启洗衣机：拔掉电源一分钟，再插上，重新开始程序。", "look_for": "故障代码消失。", "safety": "safe"}]',
 '排水泵嗡嗡响得很大声或完全没声音，或者用手转动滚筒有摩擦声，或者门锁咔哒一声但洗衣机始终不启动。',
 '{排水泵,门锁开关,皮带,电机联轴器}', 'normal'),
-- dryer
('dryer', 'en', 'Dryer not heating or taking too long',
 'The dryer runs but does not heat, clothes stay damp, drying takes too long, it is hot outside but the clothes are wet, it will not start.',
 '[{"text": "Clean the lint filter completely, and wash it with warm soapy water if it looks clogged.", "look_for": "Water passes through the clean screen.", "safety": "safe"},
   {"text": "Check the vent hose behind the dryer is not crushed, and that air blows strongly from the outside vent hood while it runs.", "look_for": "A strong, warm airflow outside.", "safety": "safe"},
   {"text": "An electric dryer needs both halves of its double breaker: reset the breaker in the electrical panel (switch it fully off, then on).", "look_for": "The dryer heats again after the reset.", "safety": "safe"},
   {"text": "Make sure the door closes firmly and the start button is held for two seconds; some models have a control lock to turn off.", "look_for": "The drum turns when you start it.", "safety": "safe"}]',
 'The drum turns but stays cold after the breaker reset and a clean vent, or it stops after a few minutes, or you hear a loud thumping or squealing.',
 '{heating element,thermal fuse,drum belt,idler pulley}', 'normal'),
('dryer', 'es', 'La secadora no calienta o tarda mucho',
 'La secadora gira pero no calienta, la ropa sigue húmeda, tarda demasiado en secar, no arranca.',
 '[{"text": "Limpia por completo el filtro de pelusa y lávalo con agua tibia y jabón si parece tapado.", "look_for": "El agua pasa por la malla limpia.", "safety": "safe"},
   {"text": "Comprueba que el tubo de ventilación detrás de la secadora no está aplastado y que sale aire con fuerza por la salida exterior mientras funciona.", "look_for": "Un flujo de aire fuerte y tibio afuera.", "safety": "safe"},
   {"text": "Una secadora eléctrica necesita las dos mitades de su interruptor doble: reinicia el interruptor automático en el tablero (apágalo del todo y vuelve a encenderlo).", "look_for": "La secadora vuelve a calentar tras el reinicio.", "safety": "safe"},
   {"text": "Asegúrate de que la puerta cierra firmemente y mantén pulsado el botón de inicio dos segundos; algunos modelos tienen un bloqueo de controles.", "look_for": "El tambor gira al arrancarla.", "safety": "safe"}]',
 'El tambor gira pero sigue frío tras reiniciar el interruptor y limpiar la ventilación, o se detiene a los pocos minutos, o se oyen golpes o chirridos fuertes.',
 '{resistencia calefactora,fusible térmico,correa del tambor,polea tensora}', 'normal'),
('dryer', 'zh-Hans', '干衣机不加热或烘干太慢',
 '干衣机转动但不加热，衣服还是潮湿，烘干时间太长，无法启动。',
 '[{"text": "彻底清理绒毛过滤网，如果堵塞就用温肥皂水清洗。", "look_for": "清洁后的滤网能透水。", "safety": "safe"},
   {"text": "检查干衣机后面的排气管没有被压扁，运行时室外排气口有强风吹出。", "look_for": "室外有强劲的温风。", "safety": "safe"},
   {"text": "电干衣机需要双联断路器的两路都通电：到配电箱把断路器复位（完全关闭再打开）。", "look_for": "复位后干衣机重新加热。", "safety": "safe"},
   {"text": "确认门关紧，按住启动键两秒；部分型号有童锁需要先解除。", "look_for": "启动后滚筒转动。", "safety": "safe"}]',
 '断路器复位并清理排气管后滚筒转动但仍不热，或者几分钟后就停，或者有很大的撞击声或尖叫声。',
 '{加热元件,温度保险丝,滚筒皮带,张紧轮}', 'normal'),
-- dishwasher
('dishwasher', 'en', 'Dishwasher not draining or not cleaning',
 'The dishwasher leaves water at the bottom, does not drain, dishes are dirty or gritty, it smells, it will not start, the door will not latch.',
 '[{"text": "Twist out the filter at the bottom of the tub and rinse it under the tap, brushing off any food.", "look_for": "A clean mesh with no food or glass in it.", "safety": "safe"},
   {"text": "Check the drain hose under the sink is not kinked, and if it joins a garbage disposal, run the disposal to clear it.", "look_for": "The hose loops up high with no kinks.", "safety": "safe"},
   {"text": "Make sure the door latch clicks shut and nothing (a pan handle, the bottom rack) keeps the door from closing fully.", "look_for": "The door latches and the cycle starts.", "safety": "safe"},
   {"text": "Reset the dishwasher: press Start/Cancel for three seconds, or switch off its breaker for one minute.", "look_for": "The lights blink and the error is cleared.", "safety": "safe"},
   {"text": "Check the spray arms turn freely and their holes are not blocked (clear them with a toothpick).", "look_for": "The arms spin by hand and water flows from every hole.", "safety": "safe"}]',
 'Water leaks onto the floor, or the drain pump hums without draining after the filter is clean, or the door latch is broken.',
 '{drain pump,door latch,inlet valve,wash motor}', 'normal'),
('dishwasher', 'es', 'El lavavajillas no desagua o no lava bien',
 'El lavavajillas deja agua en el fondo, no desagua, los platos salen sucios o con arenilla, huele mal, no arranca, la puerta no cierra.',
 '[{"text": "Gira y saca el filtro del fondo de la cuba y enjuágalo bajo el grifo, quitando restos de comida.", "look_for": "Una malla limpia, sin comida ni vidrio.", "safety": "safe"},
   {"text": "Comprueba que la manguera de desagüe bajo el fregadero no está doblada y, si va a un triturador, hazlo funcionar para despejarlo.", "look_for": "La manguera sube en curva sin dobleces.", "safety": "safe"},
   {"text": "Asegúrate de que el pestillo de la puerta hace clic y nada (un mango, la bandeja inferior) impide cerrarla del todo.", "look_for": "La puerta cierra y el ciclo empieza.", "safety": "safe"},
   {"text": "Reinicia el lavavajillas: pulsa Inicio/Cancelar tres segundos, o apaga su interruptor automático un minuto.", "look_for": "Las luces parpadean y el error se borra.", "safety": "safe"},
   {"text": "Comprueba que los brazos aspersores giran libremente y sus orificios no están tapados (despéjalos con un palillo).", "look_for": "Los brazos giran a mano y sale agua por todos los orificios.", "safety": "safe"}]',
 'Sale agua al suelo, o la bomba de desagüe zumba sin desaguar con el filtro limpio, o el pestillo de la puerta está roto.',
 '{bomba de desagüe,pestillo de la puerta,válvula de entrada,motor de lavado}', 'normal'),
('dishwasher', 'zh-Hans', '洗碗机不排水或洗不干净',
 '洗碗机底部有积水，不排水，碗碟洗不干净或有沙粒，有异味，无法启动，门关不上。',
 '[{"text": "拧出内胆底部的过滤网，在水龙头下冲洗，刷掉食物残渣。", "look_for": "滤网干净，没有残渣或玻璃。", "safety": "safe"},
   {"text": "检查水槽下的排水管没有打折；如果接在垃圾处理器上，运行一下处理器把它疏通。", "look_for": "排水管高位弯起，没有折痕。", "safety": "safe"},
   {"text": "确认门锁能咔哒锁上，没有锅柄或下层碗篮挡住门。", "look_for": "门锁好，程序开始运行。", "safety": "safe"},
   {"text": "重启洗碗机：按住启动/取消键三秒，或者把它的断路器关闭一分钟。", "look_for": "指示灯闪烁，故障清除。", "safety": "safe"},
   {"text": "检查喷淋臂能自由转动，喷孔没有堵塞（用牙签疏通）。", "look_for": "用手能转动喷淋臂，每个孔都出水。", "safety": "safe"}]',
 '水漏到地板上，或者过滤网清洁后排水泵嗡嗡响却不排水，或者门锁坏了。',
 '{排水泵,门锁,进水阀,洗涤电机}', 'normal'),
-- range
('range', 'en', 'Range burner will not light or heat',
 'A burner will not light, clicks but no flame, a surface element does not heat, the cooktop heats unevenly, the igniter keeps clicking.',
 '[{"text": "With the burner off and cool, lift the burner cap and seat it back flat and centered on its base.", "look_for": "The cap sits level with no gap.", "safety": "safe"},
   {"text": "Clean the burner ports and the igniter tip with a dry toothbrush; let everything dry fully if it got wet from a spill.", "look_for": "No food or water left around the igniter.", "safety": "safe"},
   {"text": "For an electric coil element, with the range off and cool, unplug the coil and push it firmly back into its socket.", "look_for": "The element glows red after re-seating it.", "safety": "caution"},
   {"text": "Check the range is plugged in and reset the breaker for the range in the electrical panel.", "look_for": "The clock or display lights up.", "safety": "safe"}]',
 'The igniter clicks on every burner with no flame after cleaning, or one element never heats after re-seating, or the knob feels loose.',
 '{spark igniter,spark module,surface element,infinite switch}', 'normal'),
('range', 'es', 'El quemador de la estufa no enciende o no calienta',
 'Un quemador no enciende, hace clic pero no hay llama, un elemento no calienta, la placa calienta de forma desigual, el encendedor sigue chasqueando.',
 '[{"text": "Con el quemador apagado y frío, levanta la tapa del quemador y vuelve a colocarla plana y centrada sobre su base.", "look_for": "La tapa queda nivelada, sin holgura.", "safety": "safe"},
   {"text": "Limpia los orificios del quemador y la punta del encendedor con un cepillo de dientes seco; deja secar todo si se mojó con un derrame.", "look_for": "No queda comida ni agua alrededor del encendedor.", "safety": "safe"},
   {"text": "En un elemento eléctrico de espiral, con la estufa apagada y fría, desconecta la espiral y vuelve a insertarla firmemente en su conector.", "look_for": "El elemento se pone rojo tras recolocarlo.", "safety": "caution"},
   {"text": "Comprueba que la estufa está enchufada y reinicia su interruptor automático en el tablero eléctrico.", "look_for": "El reloj o la pantalla se encienden.", "safety": "safe"}]',
 'El encendedor chasquea en todos los quemadores sin llama tras limpiarlos, o un elemento nunca calienta tras recolocarlo, o la perilla está floja.',
 '{encendedor,módulo de chispa,elemento calefactor,interruptor de control}', 'normal'),
('range', 'zh-Hans', '炉灶点不着火或不加热',
 '灶头点不着火，有咔哒声但没有火焰，电热盘不热，灶面加热不均匀，点火器一直咔哒响。',
 '[{"text": "在灶头关闭并冷却后，拿起火盖，重新平稳地放正在底座上。", "look_for": "火盖放平，没有缝隙。", "safety": "safe"},
   {"text": "用干牙刷清洁火孔和点火针头；如果溢出的汤水弄湿了，要等完全干透。", "look_for": "点火针周围没有残渣或水。", "safety": "safe"},
   {"text": "如果是电热盘，在炉灶关闭并冷却后，拔出电热盘再用力插回插座。", "look_for": "重新插好后电热盘发红。", "safety": "caution"},
   {"text": "检查炉灶插头是否插好，并在配电箱复位炉灶的断路器。", "look_for": "时钟或显示屏亮起。", "safety": "safe"}]',
 '清洁后所有灶头点火器都咔哒响但没有火焰，或者重新插好后电热盘始终不热，或者旋钮松动。',
 '{点火器,点火模块,电热盘,调节开关}', 'normal'),
-- oven
('oven', 'en', 'Oven not heating or wrong temperature',
 'The oven does not heat, will not reach temperature, bakes unevenly, takes too long to preheat, the display shows an error, the oven is locked.',
 '[{"text": "Check the clock is set and the oven is not in Sabbath, delay-start or control-lock mode (hold Lock or Cancel for three seconds).", "look_for": "The oven starts preheating.", "safety": "safe"},
   {"text": "Reset the oven: switch off its breaker in the electrical panel for one minute, then on.", "look_for": "The error code is gone and the oven heats.", "safety": "safe"},
   {"text": "Put an oven thermometer in the middle of the oven, set 350 °F (175 °C) and compare after 20 minutes.", "look_for": "How far the real temperature is from the setting.", "safety": "safe"},
   {"text": "Make sure the door closes fully and the seal around it is not torn or out of place.", "look_for": "No heat escapes around the door.", "safety": "safe"}]',
 'The bake or broil element shows a blister or break, or the oven stays cold after the reset, or the temperature is off by more than 35 degrees.',
 '{bake element,broil element,temperature sensor,control board}', 'normal'),
('oven', 'es', 'El horno no calienta o la temperatura no es correcta',
 'El horno no calienta, no alcanza la temperatura, hornea de forma desigual, tarda mucho en precalentar, la pantalla muestra un error, el horno está bloqueado.',
 '[{"text": "Comprueba que el reloj está puesto y que el horno no está en modo sabático, inicio diferido o bloqueo de controles (mantén Bloqueo o Cancelar tres segundos).", "look_for": "El horno empieza a precalentar.", "safety": "safe"},
   {"text": "Reinicia el horno: apaga su interruptor automático en el tablero un minuto y vuelve a encenderlo.", "look_for": "El código de error desaparece y el horno calienta.", "safety": "safe"},
   {"text": "Pon un termómetro de horno en el centro, ajusta 175 °C y compara a los 20 minutos.", "look_for": "Cuánto se aleja la temperatura real del ajuste.", "safety": "safe"},
   {"text": "Asegúrate de que la puerta cierra del todo y la junta no está rota ni fuera de lugar.", "look_for": "No escapa calor alrededor de la puerta.", "safety": "safe"}]',
 'La resistencia de hornear o gratinar tiene una ampolla o rotura, o el horno sigue frío tras el reinicio, o la temperatura se desvía más de 20 grados.',
 '{resistencia de horneado,resistencia del gratinador,sensor de temperatura,placa de control}', 'normal'),
('oven', 'zh-Hans', '烤箱不加热或温度不准',
 '烤箱不加热，达不到设定温度，烤得不均匀，预热时间太长，显示屏报错，烤箱被锁定。',
 '[{"text": "检查时钟已设置，烤箱没有处于安息日模式、预约启动或童锁状态（按住锁定或取消键三秒）。", "look_for": "烤箱开始预热。", "safety": "safe"},
   {"text": "重启烤箱：在配电箱把它的断路器关闭一分钟，再打开。", "look_for": "故障代码消失，烤箱能加热。", "safety": "safe"},
   {"text": "把烤箱温度计放在中间，设定175°C，20分钟后对比。", "look_for": "实际温度与设定相差多少。", "safety": "safe"},
   {"text": "确认烤箱门能完全关上，门封条没有破损或脱位。", "look_for": "门四周没有热气漏出。", "safety": "safe"}]',
 '烤管或上烤管有鼓包或断裂，或者重启后烤箱仍然不热，或者温度偏差超过20度。',
 '{下加热管,上加热管,温度传感器,控制板}', 'normal'),
-- air conditioner
('air_conditioner', 'en', 'Air conditioner not cooling',
 'The air conditioner runs but does not cool, blows warm air, the house stays hot, the outdoor unit does not run, ice on the pipes, it will not turn on.',
 '[{"text": "Set the thermostat to Cool, 5 degrees below room temperature, with the fan on Auto, and replace its batteries if the display is blank.", "look_for": "The thermostat calls for cooling and the system starts.", "safety": "safe"},
   {"text": "Replace or clean the air filter at the indoor unit or the return grille.", "look_for": "A clean filter; stronger airflow from the vents.", "safety": "safe"},
   {"text": "Reset the AC breaker in the electrical panel and check the outdoor disconnect switch is on.", "look_for": "The outdoor fan starts after a few minutes.", "safety": "safe"},
   {"text": "Clear leaves and debris from around the outdoor unit (two feet all around) and gently rinse its fins with a garden hose, power off.", "look_for": "Air moves freely through the outdoor unit.", "safety": "caution"},
   {"text": "If the pipes are iced, switch the system off and run the fan only for two hours to thaw it.", "look_for": "The ice melts; cooling returns.", "safety": "safe"}]',
 'The outdoor fan does not spin while the compressor hums, or ice comes back on the pipes, or the breaker trips again.',
 '{run capacitor,contactor,condenser fan motor,refrigerant leak repair}', 'high'),
('air_conditioner', 'es', 'El aire acondicionado no enfría',
 'El aire acondicionado funciona pero no enfría, sopla aire caliente, la casa sigue caliente, la unidad exterior no funciona, hielo en las tuberías, no enciende.',
 '[{"text": "Pon el termostato en Frío, 3 grados por debajo de la temperatura ambiente, con el ventilador en Auto, y cambia sus pilas si la pantalla está en blanco.", "look_for": "El termostato pide frío y el sistema arranca.", "safety": "safe"},
   {"text": "Cambia o limpia el filtro de aire de la unidad interior o de la rejilla de retorno.", "look_for": "Un filtro limpio; más flujo de aire por las rejillas.", "safety": "safe"},
   {"text": "Reinicia el interruptor automático del aire en el tablero y comprueba que el interruptor de desconexión exterior está encendido.", "look_for": "El ventilador exterior arranca a los pocos minutos.", "safety": "safe"},
   {"text": "Retira hojas y suciedad alrededor de la unidad exterior (60 cm alrededor) y enjuaga suavemente sus aletas con una manguera, sin corriente.", "look_for": "El aire pasa libremente por la unidad exterior.", "safety": "caution"},
   {"text": "Si las tuberías tienen hielo, apaga el sistema y deja solo el ventilador dos horas para descongelarlo.", "look_for": "El hielo se derrite y vuelve el frío.", "safety": "safe"}]',
 'El ventilador exterior no gira mientras el compresor zumba, o el hielo vuelve a las tuberías, o el interruptor salta otra vez.',
 '{capacitor de marcha,contactor,motor del ventilador del condensador,reparación de fuga de refrigerante}', 'high'),
('air_conditioner', 'zh-Hans', '空调不制冷',
 '空调开着但不制冷，吹热风，屋里还是很热，室外机不转，管道结冰，开不了机。',
 '[{"text": "把温控器设为制冷模式，比室温低3度，风扇设为自动；如果屏幕不亮就换电池。", "look_for": "温控器发出制冷请求，系统启动。", "safety": "safe"},
   {"text": "更换或清洗室内机或回风口的空气过滤网。", "look_for": "滤网干净，出风口风量变大。", "safety": "safe"},
   {"text": "在配电箱复位空调断路器，并检查室外的断开开关处于打开状态。", "look_for": "几分钟后室外风扇启动。", "safety": "safe"},
   {"text": "清除室外机周围（60厘米内）的树叶杂物，断电后用水管轻轻冲洗散热片。", "look_for": "空气能顺畅穿过室外机。", "safety": "caution"},
   {"text": "如果管道结冰，关闭制冷，只开风扇两小时化冰。", "look_for": "冰融化后恢复制冷。", "safety": "safe"}]',
 '压缩机嗡嗡响但室外风扇不转，或者管道再次结冰，或者断路器再次跳闸。',
 '{运行电容,接触器,冷凝风扇电机,冷媒泄漏维修}', 'high'),
-- water heater
('water_heater', 'en', 'No hot water or not enough hot water',
 'There is no hot water, the water is lukewarm, hot water runs out fast, the water heater is leaking, it makes popping or rumbling noises.',
 '[{"text": "Electric model: reset the water heater breaker in the electrical panel (fully off, then on).", "look_for": "Hot water returns within an hour.", "safety": "safe"},
   {"text": "Gas model: look through the small window at the bottom and follow the lighting instructions on the label to check the pilot is lit.", "look_for": "A steady blue pilot flame.", "safety": "caution"},
   {"text": "Check the thermostat knob or setting is at about 120 °F (49 °C) and the unit is not in vacation mode.", "look_for": "The setting is not at its lowest.", "safety": "safe"},
   {"text": "Check the cold-water shut-off valve on the pipe above the heater is fully open.", "look_for": "The handle is in line with the pipe.", "safety": "safe"}]',
 'Water pools under the tank, or the pilot will not stay lit, or the breaker trips again, or the relief valve drips.',
 '{heating element,upper thermostat,thermocouple,gas control valve}', 'high'),
('water_heater', 'es', 'No hay agua caliente o no alcanza',
 'No hay agua caliente, el agua sale tibia, el agua caliente se acaba rápido, el calentador gotea, hace ruidos de estallidos o retumbos.',
 '[{"text": "Modelo eléctrico: reinicia el interruptor automático del calentador en el tablero (apagado del todo y encendido).", "look_for": "Vuelve el agua caliente en menos de una hora.", "safety": "safe"},
   {"text": "Modelo a gas: mira por la ventanilla inferior y sigue las instrucciones de encendido de la etiqueta para comprobar que el piloto está encendido.", "look_for": "Una llama piloto azul y estable.", "safety": "caution"},
   {"text": "Comprueba que el termostato está en unos 49 °C y que el equipo no está en modo vacaciones.", "look_for": "El ajuste no está en el mínimo.", "safety": "safe"},
   {"text": "Comprueba que la llave de paso de agua fría en la tubería sobre el calentador está totalmente abierta.", "look_for": "La manija está alineada con la tubería.", "safety": "safe"}]',
 'Se acumula agua bajo el tanque, o el piloto no se mantiene encendido, o el interruptor salta otra vez, o la válvula de alivio gotea.',
 '{resistencia,termostato superior,termopar,válvula de control de gas}', 'high'),
('water_heater', 'zh-Hans', '没有热水或热水不够',
 '没有热水，水只是温的，热水很快用完，热水器漏水，有爆裂声或轰隆声。',
 '[{"text": "电热水器：在配电箱复位热水器的断路器（完全关闭再打开）。", "look_for": "一小时内恢复热水。", "safety": "safe"},
   {"text": "燃气热水器：从底部的小窗口观察，按照标签上的点火说明确认长明火是否点着。", "look_for": "稳定的蓝色长明火。", "safety": "caution"},
   {"text": "检查温控旋钮设在约49°C，没有处于度假模式。", "look_for": "没有设在最低档。", "safety": "safe"},
   {"text": "检查热水器上方管道上的冷水进水阀完全打开。", "look_for": "阀门手柄与管道平行。", "safety": "safe"}]',
 '水箱下面积水，或者长明火点不着、一松手就灭，或者断路器再次跳闸，或者泄压阀滴水。',
 '{加热管,上部温控器,热电偶,燃气控制阀}', 'high')
) AS g (category, locale, title, symptoms, checks, call_when, likely_parts, urgency);
