-- Base images (PostgreSQL): numbered versions of a family, each an image in the server's
-- image store (`base/<family>:<version>`), and which version of each family is current.
CREATE TABLE base_images (
    image_id       TEXT        NOT NULL PRIMARY KEY,
    family         TEXT        NOT NULL,
    version        BIGINT      NOT NULL CHECK (version >= 1),
    status         TEXT        NOT NULL
        CHECK (status IN ('preparing', 'prepared', 'promoted', 'aborted', 'failed')),
    source         TEXT        NOT NULL,
    created_by     TEXT        NOT NULL REFERENCES users (user_id),
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    layers_done    BIGINT      NOT NULL DEFAULT 0,
    layers_total   BIGINT      NOT NULL DEFAULT 0,
    bytes_done     BIGINT      NOT NULL DEFAULT 0,
    bytes_total    BIGINT      NOT NULL DEFAULT 0,
    size_bytes     BIGINT,
    digest         TEXT,
    error          TEXT,
    promoted_at    TIMESTAMPTZ,
    UNIQUE (family, version)
);
-- One row per family that ever had a version: the last number given (numbers are never
-- reused, so a reference names one image for good) and the current version, if any.
CREATE TABLE base_image_families (
    family       TEXT    NOT NULL PRIMARY KEY,
    last_version BIGINT  NOT NULL,
    current_id   TEXT    REFERENCES base_images (image_id)
);
