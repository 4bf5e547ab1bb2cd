-- MFA recovery (issue 15, PostgreSQL): a mailed recovery token (`mfa_recovery`) that works
-- only after a cooldown.
ALTER TABLE account_tokens DROP CONSTRAINT account_tokens_purpose_check;
ALTER TABLE account_tokens ADD CONSTRAINT account_tokens_purpose_check
    CHECK (purpose IN ('verify_email', 'reset_password', 'change_email', 'mfa_recovery'));
