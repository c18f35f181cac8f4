//! One module per subcommand, each with the function that runs it.

pub(crate) mod check;
pub(crate) mod create;
pub(crate) mod delete;
pub(crate) mod list;
pub(crate) mod ls;
pub(crate) mod prune;
pub(crate) mod restore;
pub(crate) mod unlock;
pub(crate) mod verify;
