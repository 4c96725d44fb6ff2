//! Migrations behind the gate: reading a migration directory (lifeboat's layout or another
//! tool's), the history table, the advisory lock, running migrations one transaction each, the
//! backup gate (guarantee G7) with a restore point per migration, and adopting another tool's
//! history.

pub mod adopt;
pub mod diff;
pub mod export;
pub mod gate;
pub mod history;
pub mod lint;
pub mod lock;
pub mod plan;
pub mod rehearse;
pub mod restore_before;
pub mod run;
pub mod schema_dump;
pub mod source;
