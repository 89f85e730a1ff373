//! trybuild cases live in ui/.
