//! What lifeboat says about a database's schema as it stands (rather than about the migrations
//! that built it): `lifeboat schema check`, also run after `migrate up` (`[migrate] schema_check`).

pub mod check;
