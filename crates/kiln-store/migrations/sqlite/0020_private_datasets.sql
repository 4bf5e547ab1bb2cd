-- Private datasets (issue 15): a dataset owned by an organization (its account user) is
-- seen only by those acting in that org. NULL: public, as every dataset was before.
ALTER TABLE datasets ADD COLUMN owner_user_id TEXT REFERENCES users (user_id);
