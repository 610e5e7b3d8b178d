//! natter on mio: real sockets and files driving natter-core.
