//! `virtual-board`: runs a NodeMCU twin on this machine. See `virtual-board --help`.

fn main() -> std::process::ExitCode {
    virtual_board::cli::main(std::env::args_os())
}
