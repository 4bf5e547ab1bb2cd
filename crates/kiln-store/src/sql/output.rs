//! A command's output (`interactions.stdout`, `.stderr`): UTF-8 text that may contain NUL
//! characters. SQLite keeps it as TEXT; PostgreSQL as BYTEA holding the UTF-8 bytes, because
//! its TEXT cannot hold NUL.
use std::borrow::Cow;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output<'a>(pub Cow<'a, str>);

impl<'a> Output<'a> {
    pub fn of(text: &'a str) -> Self {
        Self(Cow::Borrowed(text))
    }

    pub fn into_string(self) -> String {
        self.0.into_owned()
    }
}

impl Type<Sqlite> for Output<'_> {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Output<'q> {
    fn encode(self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        buf.push(SqliteArgumentValue::Text(self.0));
        Ok(IsNull::No)
    }

    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        buf.push(SqliteArgumentValue::Text(self.0.clone()));
        Ok(IsNull::No)
    }
}

impl<'r> Decode<'r, Sqlite> for Output<'static> {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self(Cow::Owned(<String as Decode<Sqlite>>::decode(value)?)))
    }
}

impl Type<Postgres> for Output<'_> {
    fn type_info() -> PgTypeInfo {
        <Vec<u8> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Vec<u8> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Output<'_> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode(self.0.as_bytes(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Output<'static> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let bytes = <Vec<u8> as Decode<Postgres>>::decode(value)?;
        Ok(Self(Cow::Owned(String::from_utf8(bytes)?)))
    }
}
