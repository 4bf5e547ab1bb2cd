//! What really differs between SQLite and PostgreSQL, and nothing else: how a write
//! transaction takes its lock, how a read sees one snapshot, a few keywords, and (through the
//! column types in [`Stamp`] and [`Output`]) how some values are stored.
//!
//! The queries themselves are written once, generic over a [`Dialect`]. sqlx's own traits
//! would make every generic function repeat a dozen higher-ranked bounds (`for<'c> &'c mut
//! Connection: Executor<'c>`, `for<'q> String: Encode<'q, DB>`, …), because Rust does not
//! carry `where` clauses of a trait to its users. Bounds on `Self` do carry, so this module
//! restates each needed capability as a supertrait of `Dialect` ([`Binds`], [`Reads`], the
//! arguments' `IntoArguments`) with a blanket implementation, and reaches the executor through
//! [`Dialect::exec`]: `D: Dialect` is then the only bound a query needs.
use std::future::Future;

use chrono::{DateTime, Utc};
use sqlx::query::Query;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Row,
    Transaction, Type,
};

use super::output::Output;
use crate::timestamp::Stamp;
use crate::{Result, StoreError};

/// `T` can be bound as an argument of a query on this database.
pub trait Binds<'q, T>: Database {
    fn bind_to(query: Query<'q, Self, Self::Arguments<'q>>, value: T) -> SqlQuery<'q, Self>;
    fn push_to(builder: &mut QueryBuilder<'q, Self>, value: T);
}

impl<'q, DB: Database, T: 'q + Encode<'q, DB> + Type<DB>> Binds<'q, T> for DB {
    fn bind_to(query: Query<'q, Self, Self::Arguments<'q>>, value: T) -> SqlQuery<'q, Self> {
        query.bind(value)
    }

    fn push_to(builder: &mut QueryBuilder<'q, Self>, value: T) {
        builder.push_bind(value);
    }
}

/// A column of this database can be read as `T`.
pub trait Reads<T>: Database {
    fn read(row: &Self::Row, column: &str) -> Result<T, sqlx::Error>;
}

impl<DB: Database, T> Reads<T> for DB
where
    T: for<'r> Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    fn read(row: &Self::Row, column: &str) -> Result<T, sqlx::Error> {
        row.try_get(column)
    }
}

/// A query with its arguments, on database `D`.
pub type SqlQuery<'q, D> = Query<'q, D, <D as Database>::Arguments<'q>>;

/// A backend's SQL dialect. Implemented by [`sqlx::Sqlite`] and [`sqlx::Postgres`] only.
pub trait Dialect:
    Database
    + for<'q> Database<Arguments<'q>: IntoArguments<'q, Self>>
    + for<'q> Binds<'q, &'q str>
    + for<'q> Binds<'q, Option<&'q str>>
    + for<'q> Binds<'q, String>
    + for<'q> Binds<'q, Option<String>>
    + for<'q> Binds<'q, i64>
    + for<'q> Binds<'q, Option<i64>>
    + for<'q> Binds<'q, bool>
    + for<'q> Binds<'q, Option<f64>>
    + for<'q> Binds<'q, f64>
    + for<'q> Binds<'q, Stamp>
    + for<'q> Binds<'q, Option<Stamp>>
    + for<'q> Binds<'q, Output<'q>>
    + Reads<String>
    + Reads<Option<String>>
    + Reads<i64>
    + Reads<Option<i64>>
    + Reads<bool>
    + Reads<Option<bool>>
    + Reads<f64>
    + Reads<Option<f64>>
    + Reads<Stamp>
    + Reads<Option<Stamp>>
    + Reads<Output<'static>>
{
    /// What [`crate::Backend::backend`] says.
    const BACKEND: &'static str;
    /// Boolean literals as the schema stores them. SQLite keeps INTEGER 0/1, and its planner
    /// uses the partial index `WHERE latest = 1` only for that literal comparison.
    const TRUE: &'static str;
    const FALSE: &'static str;
    /// `LIKE` ignoring the case of ASCII letters: SQLite's `LIKE` does; PostgreSQL's `ILIKE`
    /// does on the "C"-collated columns it is used on.
    const LIKE_IGNORING_CASE: &'static str;
    /// Appended to a `SELECT` that must lock the rows it reads until commit. SQLite has no
    /// row locks (empty): there [`Dialect::begin_write`] has locked the database already.
    const FOR_UPDATE: &'static str;

    /// `conn` as an executor: sqlx implements `Executor` per driver, not generically.
    fn exec<'c>(conn: &'c mut Self::Connection) -> impl Executor<'c, Database = Self>;

    /// The builder's query. sqlx's `build` gives arguments that live longer than the query
    /// (`'a` vs `'b`), which a generic `IntoArguments<'q>` cannot follow; a backend's own
    /// argument type shortens to `'b` by variance.
    fn build<'b, 'a: 'b>(builder: &'b mut QueryBuilder<'a, Self>) -> SqlQuery<'b, Self>;

    /// How many rows a statement changed (sqlx has no generic accessor).
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// The cross-process change feed ([`crate::ChangeFeed`]); none by default (SQLite).
    fn change_feed(_pool: &Pool<Self>) -> Option<std::sync::Arc<dyn crate::ChangeFeed>> {
        None
    }

    /// A transaction that reads before it writes and must not interleave with another one
    /// doing the same. SQLite: `BEGIN IMMEDIATE`, the write lock up front (a deferred
    /// transaction upgrading from read to write can fail with SQLITE_BUSY whatever the busy
    /// timeout). PostgreSQL: a plain `BEGIN`; the statements take row locks themselves
    /// (`FOR UPDATE`, `UPDATE`, an upsert).
    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>>> + Send;

    /// A read-only transaction whose statements all see one snapshot (a page and its total).
    /// SQLite: any transaction in WAL mode; PostgreSQL: REPEATABLE READ (READ COMMITTED takes
    /// a snapshot per statement).
    fn begin_snapshot(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>>> + Send;

    /// The column as `T`. A value that does not decode (a timestamp that is not the store's
    /// text form, output that is not UTF-8, …) is corrupt data, not a database failure.
    fn get<T>(row: &Self::Row, column: &str) -> Result<T>
    where
        Self: Reads<T>,
    {
        <Self as Reads<T>>::read(row, column).map_err(|e| match e {
            sqlx::Error::ColumnDecode { index, source } => {
                StoreError::Corrupt(format!("column {index}: {source}"))
            }
            other => other.into(),
        })
    }

    /// A timestamp column.
    fn time(row: &Self::Row, column: &str) -> Result<DateTime<Utc>> {
        Ok(Self::get::<Stamp>(row, column)?.0)
    }

    /// A nullable timestamp column.
    fn opt_time(row: &Self::Row, column: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(Self::get::<Option<Stamp>>(row, column)?.map(|s| s.0))
    }
}

/// `.arg(value)`: binds like sqlx's `.bind`, with [`Dialect`] as the only bound.
pub(crate) trait QueryExt<'q, D: Dialect> {
    fn arg<T>(self, value: T) -> Self
    where
        D: Binds<'q, T>;
}

impl<'q, D: Dialect> QueryExt<'q, D> for SqlQuery<'q, D> {
    fn arg<T>(self, value: T) -> Self
    where
        D: Binds<'q, T>,
    {
        <D as Binds<'q, T>>::bind_to(self, value)
    }
}

/// `.push_arg(value)` on a [`QueryBuilder`], like its `.push_bind`.
pub(crate) trait BuilderExt<'q, D: Dialect> {
    fn push_arg<T>(&mut self, value: T) -> &mut Self
    where
        D: Binds<'q, T>;

    /// `a, b, c` of arguments (an `IN` list).
    fn push_args<T, I>(&mut self, values: I) -> &mut Self
    where
        I: IntoIterator<Item = T>,
        D: Binds<'q, T>,
    {
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push_sql(", ");
            }
            self.push_arg(value);
        }
        self
    }

    fn push_sql(&mut self, sql: &str) -> &mut Self;
}

impl<'q, D: Dialect> BuilderExt<'q, D> for QueryBuilder<'q, D> {
    fn push_arg<T>(&mut self, value: T) -> &mut Self
    where
        D: Binds<'q, T>,
    {
        <D as Binds<'q, T>>::push_to(self, value);
        self
    }

    fn push_sql(&mut self, sql: &str) -> &mut Self {
        self.push(sql)
    }
}

/// Reads a stored enum (`status`, `kind`), reporting an unknown value as corrupt data.
pub(crate) fn parse_column<T>(
    text: &str,
    what: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T> {
    parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown {what} {text:?}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use sqlx::{Connection, Sqlite, SqliteConnection};

    use super::Dialect;
    use crate::StoreError;

    #[tokio::test]
    async fn undecodable_values_are_corrupt_data() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let row = sqlx::query("SELECT 'yesterday' AS t, 'not a number' AS n")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(matches!(
            Sqlite::time(&row, "t"),
            Err(StoreError::Corrupt(m)) if m.contains("yesterday")
        ));
        assert!(matches!(
            Sqlite::get::<i64>(&row, "n"),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            Sqlite::get::<String>(&row, "missing"),
            Err(StoreError::Database(_))
        ));
    }
}
