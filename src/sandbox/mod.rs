//! The sandbox: a pool of isolated, warm Python workers that run untrusted generated code.
