fn main() {
    println!("twinbeat");
}
