fn main() {
    std::process::exit(tack::run(std::env::args_os()));
}
