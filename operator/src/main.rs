fn main() {
    for crd in portcullis_api::crds() {
        println!("---\n{}", serde_yaml::to_string(&crd).unwrap());
    }
}
