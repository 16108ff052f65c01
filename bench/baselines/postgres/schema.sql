-- The PostgreSQL baseline ledger: the switch's payment posted as double entry by one stored
-- function call, so the load benchmark can put a well-known durable database beside the switch.
--
-- This file is a template: each UPPER_CASE name in double braces is replaced by schema.py with the
-- result codes of core_ext/codes.py (CODE_<NAME>), the workload's constants and the switch's
-- limits, so the numbers a client sees here are the switch's own and are written down once.
--
-- Money is bigint minor units everywhere; nothing is numeric or float. PostgreSQL's bigint is
-- signed, so a balance here tops out at 2^63-1 (the switch's u64 allows 2^64-1); every addition
-- is checked against that before it is made, so an overflow is a result code, never an error.

CREATE TABLE account (
    id                             bigint   PRIMARY KEY CHECK (id > 0),
    ledger                         integer  NOT NULL CHECK (ledger > 0),
    code                           smallint NOT NULL CHECK (code > 0),
    debits_must_not_exceed_credits boolean  NOT NULL DEFAULT false,
    debits_posted_minor            bigint   NOT NULL DEFAULT 0 CHECK (debits_posted_minor >= 0),
    credits_posted_minor           bigint   NOT NULL DEFAULT 0 CHECK (credits_posted_minor >= 0),
    -- Belt and braces: the function checks this before writing, the table refuses it anyway.
    CHECK (NOT debits_must_not_exceed_credits OR debits_posted_minor <= credits_posted_minor)
) WITH (fillfactor = 50);  -- room on each page so balance updates stay HOT (no index churn)

-- The merchant directory: which accounts take payments, and the fee the scheme keeps.
CREATE TABLE merchant (
    account_id bigint   PRIMARY KEY REFERENCES account (id),
    fee_bps    smallint NOT NULL CHECK (fee_bps BETWEEN 0 AND 10000)
);

-- One row per payment id ever seen: the idempotency record. Rejections that depend on the
-- ledger's state (balance, missing account, overflow) are recorded too, so a retry of such an
-- id answers ID_ALREADY_FAILED, as the switch's TigerBeetle-style ledger does.
CREATE TABLE payment (
    id                  uuid        PRIMARY KEY,
    payer_account_id    bigint      NOT NULL,
    merchant_account_id bigint      NOT NULL,
    amount_minor        bigint      NOT NULL,
    result_code         smallint    NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- The journal of postings: each leg debits one account and credits another by the same amount.
-- An accepted payment has leg 0 (payer -> merchant) and, when the fee is not zero, leg 1
-- (merchant -> fee account). Opening balances are leg 0 of a funding id per payer.
CREATE TABLE transfer (
    payment_id        uuid        NOT NULL,
    leg_index         smallint    NOT NULL,
    debit_account_id  bigint      NOT NULL,
    credit_account_id bigint      NOT NULL,
    amount_minor      bigint      NOT NULL CHECK (amount_minor > 0),
    ledger            integer     NOT NULL,
    code              smallint    NOT NULL,
    posted_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (payment_id, leg_index)
);


-- Faults in the request itself, decided without reading the ledger (and so not recorded).
CREATE FUNCTION payment_request_code(
    p_id uuid, p_payer_account_id bigint, p_merchant_account_id bigint,
    p_fee_account_id bigint, p_amount_minor bigint
) RETURNS smallint LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_id IS NULL OR p_id = '00000000-0000-0000-0000-000000000000' THEN
        RETURN {{CODE_ID_MUST_NOT_BE_ZERO}};
    ELSIF p_id = 'ffffffff-ffff-ffff-ffff-ffffffffffff' THEN
        RETURN {{CODE_ID_MUST_NOT_BE_INT_MAX}};
    ELSIF COALESCE(p_payer_account_id, 0) = 0 THEN
        RETURN {{CODE_DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO}};
    ELSIF COALESCE(p_merchant_account_id, 0) = 0 OR COALESCE(p_fee_account_id, 0) = 0 THEN
        RETURN {{CODE_CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO}};
    ELSIF p_payer_account_id IN (p_merchant_account_id, p_fee_account_id)
          OR p_merchant_account_id = p_fee_account_id THEN
        RETURN {{CODE_ACCOUNTS_MUST_BE_DIFFERENT}};
    ELSIF COALESCE(p_amount_minor, 0) = 0 THEN
        RETURN {{CODE_AMOUNT_MUST_NOT_BE_ZERO}};
    ELSIF p_amount_minor < 0 THEN
        RETURN {{CODE_AMOUNT_MUST_NOT_EXCEED_BALANCE_MAX}};
    END IF;
    RETURN {{CODE_OK}};
END $$;


-- What a repeated id answers: EXISTS only when it repeats the same payment.
CREATE FUNCTION payment_repeat_code(
    p_existing payment, p_payer_account_id bigint, p_merchant_account_id bigint,
    p_amount_minor bigint
) RETURNS smallint LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_existing.payer_account_id <> p_payer_account_id THEN
        RETURN {{CODE_EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID}};
    ELSIF p_existing.merchant_account_id <> p_merchant_account_id THEN
        RETURN {{CODE_EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID}};
    ELSIF p_existing.amount_minor <> p_amount_minor THEN
        RETURN {{CODE_EXISTS_WITH_DIFFERENT_AMOUNT}};
    ELSIF p_existing.result_code <> {{CODE_OK}} THEN
        RETURN {{CODE_ID_ALREADY_FAILED}};
    END IF;
    RETURN {{CODE_EXISTS}};
END $$;


-- The integer floor of amount * bps / 10,000 without forming the product, which could pass
-- 2^63-1 for a large amount: amount = q * 10,000 + r, so the floor is q * bps + r * bps / 10,000.
CREATE FUNCTION fee_minor(p_amount_minor bigint, p_fee_bps smallint)
RETURNS bigint LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (p_amount_minor / 10000) * p_fee_bps + ((p_amount_minor % 10000) * p_fee_bps) / 10000
$$;


-- The ledger's verdict on a payment, given its accounts' balances so far: OK or why not.
CREATE FUNCTION payment_posting_code(
    p_payer account, p_merchant account, p_fee account, p_fee_bps smallint,
    p_amount_minor bigint, p_fee_minor bigint
) RETURNS smallint LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    balance_minor_max constant bigint := 9223372036854775807;
BEGIN
    IF p_payer.id IS NULL THEN
        RETURN {{CODE_DEBIT_ACCOUNT_NOT_FOUND}};
    ELSIF p_merchant.id IS NULL OR p_fee_bps IS NULL OR p_fee.id IS NULL THEN
        RETURN {{CODE_CREDIT_ACCOUNT_NOT_FOUND}};
    ELSIF p_payer.ledger <> p_merchant.ledger OR p_merchant.ledger <> p_fee.ledger THEN
        RETURN {{CODE_ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER}};
    -- Written as subtractions so that the check itself cannot overflow.
    ELSIF p_payer.debits_posted_minor > balance_minor_max - p_amount_minor
          OR p_merchant.debits_posted_minor > balance_minor_max - p_fee_minor THEN
        RETURN {{CODE_OVERFLOWS_DEBITS_POSTED}};
    ELSIF p_merchant.credits_posted_minor > balance_minor_max - p_amount_minor
          OR p_fee.credits_posted_minor > balance_minor_max - p_fee_minor THEN
        RETURN {{CODE_OVERFLOWS_CREDITS_POSTED}};
    ELSIF p_payer.debits_must_not_exceed_credits
          AND p_payer.debits_posted_minor + p_amount_minor > p_payer.credits_posted_minor THEN
        RETURN {{CODE_EXCEEDS_CREDITS}};
    -- The merchant is credited the amount before it is debited the fee (fee <= amount).
    ELSIF p_merchant.debits_must_not_exceed_credits
          AND p_merchant.debits_posted_minor + p_fee_minor
              > p_merchant.credits_posted_minor + p_amount_minor THEN
        RETURN {{CODE_EXCEEDS_CREDITS}};
    END IF;
    RETURN {{CODE_OK}};
END $$;


-- Post a batch of payments in one transaction (one WAL flush for all of them) and answer a
-- core_ext.codes number per payment; each payment is all legs or none on its own.
--
-- The batch reads and locks every account it names once, in ascending id order (so two
-- transactions never deadlock), keeps the balances in variables while it decides payment after
-- payment, and writes each changed balance once at the end with all payments and legs in three
-- statements. PostgreSQL keeps every version of a row updated within one transaction, so
-- updating the fee account once per payment would make each later read walk a chain as long
-- as the batch; writing it once keeps the cost per payment flat as batches grow.
CREATE FUNCTION pay_batch(
    p_ids uuid[], p_payer_account_ids bigint[], p_merchant_account_ids bigint[],
    p_fee_account_id bigint, p_amounts_minor bigint[]
) RETURNS smallint[] LANGUAGE plpgsql AS $$
DECLARE
    v_count        integer := cardinality(p_ids);
    v_codes        smallint[] := '{}';
    v_code         smallint;
    v_account_ids  bigint[];     -- the batch's accounts, by id, balances as of the payments so far
    v_accounts     account[];
    v_merchant_ids bigint[];     -- the merchant directory's fees for the batch's merchants
    v_merchant_fees_bps smallint[];
    v_stored_ids   uuid[];       -- payments recorded before this batch, by id
    v_stored       payment[];
    v_new_ids      uuid[] := '{}';   -- and by it
    v_new          payment[] := '{}';
    v_legs         transfer[] := '{}';
    v_index        integer;
    v_payer_index  integer;
    v_merchant_index integer;
    v_fee_index    integer;
    v_payer        account;
    v_merchant     account;
    v_fee          account;
    v_fee_bps      smallint;
    v_fee_minor    bigint;
BEGIN
    IF cardinality(p_payer_account_ids) <> v_count OR cardinality(p_merchant_account_ids) <> v_count
       OR cardinality(p_amounts_minor) <> v_count THEN
        RAISE EXCEPTION 'pay_batch: the four arrays must have the same length';
    END IF;
    IF v_count > {{BATCH_EVENTS_MAX}} THEN
        RETURN array_fill({{CODE_BATCH_TOO_LARGE}}::smallint, ARRAY[v_count]);
    END IF;

    SELECT array_agg((locked.a).id ORDER BY (locked.a).id), array_agg(locked.a ORDER BY (locked.a).id)
    INTO v_account_ids, v_accounts
    FROM (SELECT a FROM account a
          WHERE a.id = ANY (p_payer_account_ids || p_merchant_account_ids || p_fee_account_id)
          ORDER BY a.id FOR UPDATE) AS locked;
    SELECT array_agg(account_id), array_agg(fee_bps) INTO v_merchant_ids, v_merchant_fees_bps
    FROM merchant WHERE account_id = ANY (p_merchant_account_ids);
    SELECT array_agg(p.id), array_agg(p) INTO v_stored_ids, v_stored
    FROM payment p WHERE p.id = ANY (p_ids);
    v_fee_index := array_position(v_account_ids, p_fee_account_id);

    FOR i IN 1 .. v_count LOOP
        v_code := payment_request_code(p_ids[i], p_payer_account_ids[i], p_merchant_account_ids[i],
                                       p_fee_account_id, p_amounts_minor[i]);
        IF v_code = {{CODE_OK}} THEN
            v_index := array_position(v_stored_ids, p_ids[i]);
            IF v_index IS NOT NULL THEN
                v_code := payment_repeat_code(v_stored[v_index], p_payer_account_ids[i],
                                              p_merchant_account_ids[i], p_amounts_minor[i]);
            ELSE
                v_index := array_position(v_new_ids, p_ids[i]);
                IF v_index IS NOT NULL THEN
                    v_code := payment_repeat_code(v_new[v_index], p_payer_account_ids[i],
                                                  p_merchant_account_ids[i], p_amounts_minor[i]);
                ELSE
                    -- A first sight of this id: decide on the balances so far, record the verdict,
                    -- and post the legs when accepted. (Inline: a PL/pgSQL call copies its arrays.)
                    v_payer_index := array_position(v_account_ids, p_payer_account_ids[i]);
                    v_merchant_index := array_position(v_account_ids, p_merchant_account_ids[i]);
                    v_payer := v_accounts[v_payer_index];          -- NULL when there is no such account
                    v_merchant := v_accounts[v_merchant_index];
                    v_fee := v_accounts[v_fee_index];
                    v_fee_bps := v_merchant_fees_bps[array_position(v_merchant_ids, p_merchant_account_ids[i])];
                    v_fee_minor := COALESCE(fee_minor(p_amounts_minor[i], v_fee_bps), 0);
                    v_code := payment_posting_code(v_payer, v_merchant, v_fee, v_fee_bps,
                                                   p_amounts_minor[i], v_fee_minor);
                    IF v_code = {{CODE_OK}} THEN
                        v_payer.debits_posted_minor := v_payer.debits_posted_minor + p_amounts_minor[i];
                        v_merchant.credits_posted_minor := v_merchant.credits_posted_minor + p_amounts_minor[i];
                        v_merchant.debits_posted_minor := v_merchant.debits_posted_minor + v_fee_minor;
                        v_fee.credits_posted_minor := v_fee.credits_posted_minor + v_fee_minor;
                        v_accounts[v_payer_index] := v_payer;
                        v_accounts[v_merchant_index] := v_merchant;
                        v_accounts[v_fee_index] := v_fee;
                        v_legs := v_legs || ROW(p_ids[i], 0::smallint, p_payer_account_ids[i], p_merchant_account_ids[i],
                                                p_amounts_minor[i], v_payer.ledger,
                                                {{TRANSFER_CODE_PAYMENT}}::smallint, now())::transfer;
                        IF v_fee_minor > 0 THEN  -- a zero fee is no posting (the switch rejects zero amounts)
                            v_legs := v_legs || ROW(p_ids[i], 1::smallint, p_merchant_account_ids[i], p_fee_account_id,
                                                    v_fee_minor, v_payer.ledger,
                                                    {{TRANSFER_CODE_FEE}}::smallint, now())::transfer;
                        END IF;
                    END IF;
                    v_new_ids := v_new_ids || p_ids[i];
                    v_new := v_new || ROW(p_ids[i], p_payer_account_ids[i], p_merchant_account_ids[i],
                                          p_amounts_minor[i], v_code, now())::payment;
                END IF;
            END IF;
        END IF;
        v_codes := v_codes || v_code;
    END LOOP;

    PERFORM write_batch(v_new, v_legs, v_accounts);
    RETURN v_codes;
END $$;


-- The batch's effects in three statements: its payments (accepted or refused for good), its
-- legs, and each balance it changed, written once.
CREATE FUNCTION write_batch(p_payments payment[], p_legs transfer[], p_accounts account[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_recorded_count bigint;
BEGIN
    INSERT INTO payment SELECT * FROM unnest(p_payments) ON CONFLICT (id) DO NOTHING;
    GET DIAGNOSTICS v_recorded_count = ROW_COUNT;
    IF v_recorded_count <> cardinality(p_payments) THEN
        -- Only a transaction that does not share our fee account's lock can get here first.
        -- Undo the whole batch; retrying it with the same ids is safe and answers EXISTS.
        RAISE EXCEPTION 'pay_batch: another transaction recorded one of these payment ids first'
            USING ERRCODE = 'serialization_failure';
    END IF;
    INSERT INTO transfer SELECT * FROM unnest(p_legs);
    UPDATE account AS a
    SET debits_posted_minor = new.debits_posted_minor, credits_posted_minor = new.credits_posted_minor
    FROM unnest(p_accounts) AS new
    WHERE a.id = new.id
      AND (a.debits_posted_minor, a.credits_posted_minor)
          IS DISTINCT FROM (new.debits_posted_minor, new.credits_posted_minor);
END $$;


-- One payment per call, the client's whole transaction. The same rules as pay_batch (the code
-- functions above); the plumbing differs because, for one payment, a few direct statements
-- cost less than pay_batch's arrays.
CREATE FUNCTION pay(
    p_id uuid, p_payer_account_id bigint, p_merchant_account_id bigint,
    p_fee_account_id bigint, p_amount_minor bigint
) RETURNS smallint LANGUAGE plpgsql AS $$
DECLARE
    v_code      smallint;
    v_row       account;
    v_payer     account;
    v_merchant  account;
    v_fee       account;
    v_fee_bps   smallint;
    v_fee_minor bigint;
    v_stored    payment;
BEGIN
    v_code := payment_request_code(p_id, p_payer_account_id, p_merchant_account_id,
                                   p_fee_account_id, p_amount_minor);
    IF v_code <> {{CODE_OK}} THEN
        RETURN v_code;
    END IF;
    -- Lock and read the three accounts in one statement, in ascending id order (no deadlocks).
    FOR v_row IN SELECT * FROM account
                 WHERE id IN (p_payer_account_id, p_merchant_account_id, p_fee_account_id)
                 ORDER BY id FOR UPDATE LOOP
        CASE v_row.id
            WHEN p_payer_account_id THEN v_payer := v_row;
            WHEN p_merchant_account_id THEN v_merchant := v_row;
            ELSE v_fee := v_row;
        END CASE;
    END LOOP;
    SELECT fee_bps INTO v_fee_bps FROM merchant WHERE account_id = p_merchant_account_id;
    v_fee_minor := COALESCE(fee_minor(p_amount_minor, v_fee_bps), 0);
    v_code := payment_posting_code(v_payer, v_merchant, v_fee, v_fee_bps, p_amount_minor, v_fee_minor);

    -- The insert is the idempotency check: a repeated id inserts nothing and posts nothing.
    INSERT INTO payment (id, payer_account_id, merchant_account_id, amount_minor, result_code)
    VALUES (p_id, p_payer_account_id, p_merchant_account_id, p_amount_minor, v_code)
    ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT * INTO v_stored FROM payment WHERE id = p_id;
        RETURN payment_repeat_code(v_stored, p_payer_account_id, p_merchant_account_id, p_amount_minor);
    END IF;
    IF v_code <> {{CODE_OK}} THEN
        RETURN v_code;
    END IF;

    UPDATE account AS a
    SET debits_posted_minor = a.debits_posted_minor + leg.debit_minor,
        credits_posted_minor = a.credits_posted_minor + leg.credit_minor
    FROM (VALUES (p_payer_account_id, p_amount_minor, 0::bigint),
                 (p_merchant_account_id, v_fee_minor, p_amount_minor),
                 (p_fee_account_id, 0::bigint, v_fee_minor)) AS leg (account_id, debit_minor, credit_minor)
    WHERE a.id = leg.account_id;
    INSERT INTO transfer (payment_id, leg_index, debit_account_id, credit_account_id, amount_minor, ledger, code)
    SELECT p_id, leg.leg_index, leg.debit_account_id, leg.credit_account_id, leg.amount_minor,
           v_payer.ledger, leg.code
    FROM (VALUES (0::smallint, p_payer_account_id, p_merchant_account_id, p_amount_minor,
                  {{TRANSFER_CODE_PAYMENT}}::smallint),
                 (1::smallint, p_merchant_account_id, p_fee_account_id, v_fee_minor,
                  {{TRANSFER_CODE_FEE}}::smallint))
         AS leg (leg_index, debit_account_id, credit_account_id, amount_minor, code)
    WHERE leg.amount_minor > 0;  -- a zero fee is no posting (the switch rejects zero amounts)
    RETURN {{CODE_OK}};
END $$;
