fn main() -> std::process::ExitCode {
    resnet::cli::main()
}
