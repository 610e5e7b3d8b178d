//! natter on smol: real sockets and files driving natter-core.
