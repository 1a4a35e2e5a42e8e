//! `updraft-sandbox [--hide DIR]... [--show DIR]... [--uid N --gid N] [--keep-setid]
//! [--workdir DIR] -- PROGRAM [ARGS]...`: runs PROGRAM confined (see the library).

fn main() {
    std::process::exit(updraft_sandbox::run(std::env::args_os().skip(1)));
}
