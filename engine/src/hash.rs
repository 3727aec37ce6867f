//! stable hashing
