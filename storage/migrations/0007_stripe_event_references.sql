-- Stripe events keep only the reference of their object (handlers.money.stripe_events): the
-- full payloads held personal data (billing details, e-mails) in plaintext.
UPDATE stripe_events
SET payload = jsonb_build_object('object', jsonb_build_object('id', payload -> 'data' -> 'object' -> 'id',
                                                              'object', payload -> 'data' -> 'object' -> 'object'))
WHERE payload ? 'data';
