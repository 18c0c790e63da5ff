use super::*;

#[test]
fn the_built_in_catalog_validates() {
    let catalog = Catalog::parse(BUILT_IN, |_| None).unwrap();
    assert_eq!(catalog.models.len(), 4);
    assert_eq!(catalog.default_model, "tutor-fast");
    // 1,000 prompt and 1,000 completion tokens of the premium model: 0.0125 USD.
    assert_eq!(
        catalog.model("tutor-premium").unwrap().cost(1000, 1000),
        12_500_000
    );
}

#[test]
fn a_bad_catalog_says_what_is_wrong() {
    let broken = BUILT_IN.replace(
        "default_model = \"tutor-fast\"",
        "default_model = \"gpt-9\"",
    );
    let error = Catalog::parse(&broken, |_| None).unwrap_err();
    assert!(error.0.contains("gpt-9"), "{error}");
    let keyed = BUILT_IN.replace(
        "[providers.sandbox]\nkind = \"sandbox\"",
        "[providers.sandbox]\nkind = \"sandbox\"\n\n[providers.openai]\nkind = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\napi_key_env = \"NO_SUCH_KEY\"",
    );
    let error = Catalog::parse(&keyed, |_| None).unwrap_err();
    assert!(error.0.contains("NO_SUCH_KEY"), "{error}");
    assert!(Catalog::parse("models = 3", |_| None).is_err());
}
