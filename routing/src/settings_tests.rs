use super::*;

#[test]
fn auth_enabled_accepts_exactly_true_or_false() {
    assert_eq!(auth_enabled(Some("true")), Ok(true));
    assert_eq!(auth_enabled(Some("false")), Ok(false));
    for bad in [
        None,
        Some(""),
        Some("TRUE"),
        Some("True"),
        Some("1"),
        Some("0"),
        Some("yes"),
        Some(" true"),
        Some("false "),
    ] {
        let e = auth_enabled(bad).expect_err("refused");
        assert_eq!(e.name, "AUTH_ENABLED", "{bad:?}");
        assert!(
            e.to_string()
                .starts_with("configuration error in AUTH_ENABLED"),
            "{e}"
        );
    }
}

#[test]
fn origin_lists_parse_strictly() {
    let p = |raw| Origins::parse("CORS_ORIGINS", raw);
    assert_eq!(p(None), Ok(None));
    assert_eq!(p(Some("  ")), Ok(None));
    assert_eq!(p(Some("*")), Ok(Some(Origins::Any)));
    assert_eq!(
        p(Some(
            "https://App.Example.com, http://localhost:5173/ ,https://app.example.com"
        )),
        Ok(Some(Origins::List(vec![
            "https://app.example.com".to_string(),
            "http://localhost:5173".to_string(),
        ])))
    );
    assert_eq!(
        p(Some("http://[::1]:8080")),
        Ok(Some(Origins::List(vec!["http://[::1]:8080".to_string()])))
    );
    for bad in [
        "*, https://a.example",
        "a.example",
        "https://",
        "https://a.example/path",
        "https://a.example?q",
        "https://user@a.example",
        "https://a.example:",
        "https://a.example:123456",
        "https://a.example:80x",
        "https://[zz]",
        "https://[::1",
        "://a.example",
        "https://a.example,",
    ] {
        let e = p(Some(bad)).expect_err(bad);
        assert_eq!(e.name, "CORS_ORIGINS");
    }
    let many: Vec<String> = (0..=MAX_ORIGINS)
        .map(|i| format!("https://h{i}.example"))
        .collect();
    let (over, at) = (many.join(","), many[..MAX_ORIGINS].join(","));
    assert!(Origins::parse("CORS_ORIGINS", Some(&over)).is_err());
    assert!(Origins::parse("CORS_ORIGINS", Some(&at)).is_ok());
}

fn list(origins: &[&str]) -> Origins {
    Origins::List(origins.iter().map(|o| o.to_string()).collect())
}

#[test]
fn cors_headers_only_for_allowed_origins() {
    let l = list(&["https://a.example"]);
    assert!(cors_headers(None, Some("https://a.example")).is_empty());
    assert!(cors_headers(Some(&l), None).is_empty());
    assert!(cors_headers(Some(&l), Some("https://b.example")).is_empty());
    assert!(cors_headers(Some(&l), Some("https://a.example:443")).is_empty());
    assert_eq!(
        cors_headers(Some(&l), Some("https://A.example")),
        vec![
            (
                "access-control-expose-headers",
                "Retry-After, Allow".to_string()
            ),
            (
                "access-control-allow-origin",
                "https://A.example".to_string()
            ),
            ("vary", "Origin".to_string()),
        ]
    );
    assert_eq!(
        cors_headers(Some(&Origins::Any), Some("https://z.example")),
        vec![
            (
                "access-control-expose-headers",
                "Retry-After, Allow".to_string()
            ),
            ("access-control-allow-origin", "*".to_string()),
        ]
    );
}

#[test]
fn preflight_answers() {
    let l = list(&["https://a.example"]);
    let allow = ["POST", "OPTIONS"];
    assert_eq!(
        preflight_headers(Some(&l), Some("https://b.example"), &allow, "X-API-Key"),
        vec![("allow", "POST, OPTIONS".to_string())]
    );
    assert_eq!(
        preflight_headers(None, Some("https://a.example"), &allow, "X-API-Key"),
        vec![("allow", "POST, OPTIONS".to_string())]
    );
    let h = preflight_headers(Some(&l), Some("https://a.example"), &allow, "X-Key");
    let get = |name| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    assert_eq!(
        get("access-control-allow-origin"),
        Some("https://a.example")
    );
    assert_eq!(get("access-control-allow-methods"), Some("POST, OPTIONS"));
    assert_eq!(
        get("access-control-allow-headers"),
        Some("Authorization, Content-Type, X-Key")
    );
    assert_eq!(get("access-control-max-age"), Some("600"));
    assert_eq!(get("vary"), Some("Origin"));
}

#[test]
fn websocket_origin_check() {
    let l = list(&["https://a.example"]);
    assert!(websocket_origin(None, Some("https://evil.example")).is_ok());
    assert!(websocket_origin(Some(&l), None).is_ok());
    assert!(websocket_origin(Some(&l), Some("https://a.example")).is_ok());
    assert!(websocket_origin(Some(&Origins::Any), Some("https://x.example")).is_ok());
    let e = websocket_origin(Some(&l), Some("https://evil.example")).expect_err("refused");
    assert_eq!((e.status(), e.code), (403, ErrorCode::Forbidden));
    assert!(e.message.contains("evil.example"), "{}", e.message);
}
