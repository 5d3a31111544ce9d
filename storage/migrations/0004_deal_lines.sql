-- Deals become game-neutral: the outbox carries lines (user, sku, amount, instance, line)
-- and orders and payments are keyed by (campaign, instance, line), not by group. Existing
-- rows migrate: a group's member's line is the member, its instance the group.

ALTER TABLE orders RENAME COLUMN group_id TO instance;
ALTER TABLE orders ADD COLUMN kind text NOT NULL DEFAULT 'groupbuy';
ALTER TABLE orders ADD COLUMN line text;
UPDATE orders SET line = user_id;
ALTER TABLE orders ALTER COLUMN line SET NOT NULL;
ALTER TABLE orders ALTER COLUMN kind DROP DEFAULT;
ALTER TABLE orders DROP CONSTRAINT orders_campaign_group_id_user_id_key;
ALTER TABLE orders ADD CONSTRAINT orders_source UNIQUE (campaign, instance, line);

ALTER TABLE payments RENAME COLUMN group_id TO instance;
ALTER TABLE payments ADD COLUMN line text;
UPDATE payments SET line = user_id;
ALTER TABLE payments ALTER COLUMN line SET NOT NULL;
ALTER TABLE payments DROP CONSTRAINT payments_kind_campaign_group_id_user_id_key;
ALTER TABLE payments ADD CONSTRAINT payments_source UNIQUE (kind, campaign, instance, line);

-- Outbox rows of the old shapes (processed or not) in the new one.
UPDATE outbox SET type = 'deal', data = jsonb_build_object(
    'campaign', data->>'campaign', 'kind', 'groupbuy', 'at', data->'at',
    'lines', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                  'user', m, 'sku', data->>'sku', 'amount', (data->>'price')::bigint,
                  'instance', data->>'group', 'line', m)), '[]'::jsonb)
              FROM jsonb_array_elements_text(data->'members') AS m))
WHERE type = 'deal_completed';

UPDATE outbox SET type = 'refund', data = jsonb_build_object(
    'campaign', data->>'campaign', 'kind', 'groupbuy', 'at', data->'at',
    'lines', jsonb_build_array(jsonb_build_object(
        'user', data->>'user', 'sku', '', 'amount', (data->>'amount')::bigint,
        'instance', data->>'group', 'line', data->>'user')))
WHERE type = 'refunded';
