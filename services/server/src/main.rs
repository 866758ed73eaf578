//! `rollgate`: the rollout governance server and its command-line tools (see [`rollgate_server::cli`]).

fn main() -> std::process::ExitCode {
    rollgate_server::cli::main()
}
