fn main() {
    torch_link::configure();
}
