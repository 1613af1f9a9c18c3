// every block of 4 KiB or more on a cache line: the kernels' vector loads and stores then never
// straddle two lines (alloc.rs)
#[global_allocator]
static ALLOC: resnet::alloc::LineAligned = resnet::alloc::LineAligned;

fn main() -> std::process::ExitCode {
    resnet::cli::main()
}
