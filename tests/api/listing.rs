//! `GET /api/tasks`: order, filters, search, sort, paging, `X-Total-Count`,
//! and a 422 naming the parameter for every bad value.

use crate::common::{Backend, TestApp, error_fields, json};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn titles(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect()
}

async fn list_with_total(app: &TestApp, token: &str, query: &str) -> (Value, u64) {
    let response = app
        .request(Method::GET, &format!("/api/tasks{query}"), token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    let total = response
        .headers()
        .get("x-total-count")
        .expect("X-Total-Count")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    assert!(body.is_array(), "always a plain array");
    (body, total)
}

async fn seed(app: &TestApp, token: &str) {
    for (title, description, completed) in [
        ("Buy milk", Some("semi-skimmed"), false),
        ("Write report", None, true),
        ("call mom", Some("about the MILKMAN"), false),
        ("Zebra facts", Some("100% striped_ish"), true),
        ("Ärger vermeiden", None, false),
    ] {
        app.create(
            token,
            json!({"title": title, "description": description, "completed": completed}),
        )
        .await;
    }
}

async fn default_order_is_newest_first(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    seed(&app, &alice).await;
    let (list, total) = list_with_total(&app, &alice, "").await;
    assert_eq!(total, 5);
    assert_eq!(
        titles(&list),
        [
            "Ärger vermeiden",
            "Zebra facts",
            "call mom",
            "Write report",
            "Buy milk"
        ]
    );
    let created: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["created_at"].as_str().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");
}

async fn filters_and_search(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    seed(&app, &alice).await;
    let cases: &[(&str, &[&str])] = &[
        (
            "?status=all",
            &[
                "Ärger vermeiden",
                "Zebra facts",
                "call mom",
                "Write report",
                "Buy milk",
            ],
        ),
        (
            "?status=pending",
            &["Ärger vermeiden", "call mom", "Buy milk"],
        ),
        ("?status=completed", &["Zebra facts", "Write report"]),
        ("?completed=true", &["Zebra facts", "Write report"]),
        (
            "?completed=false",
            &["Ärger vermeiden", "call mom", "Buy milk"],
        ),
        (
            "?status=pending&completed=false",
            &["Ärger vermeiden", "call mom", "Buy milk"],
        ),
        ("?status=pending&completed=true", &[]),
        ("?q=milk", &["call mom", "Buy milk"]),
        ("?q=MILK", &["call mom", "Buy milk"]),
        (
            "?q=milk&status=pending&sort=title&order=asc",
            &["Buy milk", "call mom"],
        ),
        ("?q=Semi", &["Buy milk"]),
        ("?q=100%25", &["Zebra facts"]),
        ("?q=%25", &["Zebra facts"]),
        ("?q=_", &["Zebra facts"]),
        ("?q=s_r", &[]),
        ("?q=nothing-like-this", &[]),
        (
            "?q=",
            &[
                "Ärger vermeiden",
                "Zebra facts",
                "call mom",
                "Write report",
                "Buy milk",
            ],
        ),
        ("?q=%C3%84rger", &["Ärger vermeiden"]),
        ("?q=%27%3B%20DROP%20TABLE%20tasks%3B--", &[]),
        (
            "?unknown=1&status=completed",
            &["Zebra facts", "Write report"],
        ),
    ];
    for (query, expected) in cases {
        let (list, total) = list_with_total(&app, &alice, query).await;
        assert_eq!(titles(&list), *expected, "{query}");
        assert_eq!(total as usize, expected.len(), "{query}");
    }
}

async fn sorting_and_paging(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    seed(&app, &alice).await;
    let (by_id_asc, _) = list_with_total(&app, &alice, "?sort=id&order=asc").await;
    assert_eq!(
        titles(&by_id_asc),
        [
            "Buy milk",
            "Write report",
            "call mom",
            "Zebra facts",
            "Ärger vermeiden"
        ]
    );
    let ids: Vec<i64> = by_id_asc
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let (created_asc, _) = list_with_total(&app, &alice, "?order=asc").await;
    assert_eq!(created_asc, by_id_asc);
    let (by_title, _) = list_with_total(&app, &alice, "?sort=title&order=asc").await;
    let t = titles(&by_title);
    assert_eq!(t.first(), Some(&"Buy milk"));
    assert_eq!(t.len(), 5);

    // updated_at: touching the oldest makes it the most recently updated.
    let oldest = ids[0];
    app.request(
        Method::PATCH,
        &format!("/api/tasks/{oldest}/complete"),
        &alice,
    )
    .send()
    .await
    .unwrap();
    let (by_updated, _) = list_with_total(&app, &alice, "?sort=updated_at").await;
    assert_eq!(by_updated[0]["id"], oldest);

    // Paging: total is before limit/offset.
    let (page, total) = list_with_total(&app, &alice, "?sort=id&order=asc&limit=2").await;
    assert_eq!(
        (titles(&page), total),
        (vec!["Buy milk", "Write report"], 5)
    );
    let (page, total) = list_with_total(&app, &alice, "?sort=id&order=asc&limit=2&offset=2").await;
    assert_eq!((titles(&page), total), (vec!["call mom", "Zebra facts"], 5));
    let (page, total) = list_with_total(&app, &alice, "?sort=id&order=asc&limit=2&offset=4").await;
    assert_eq!((titles(&page), total), (vec!["Ärger vermeiden"], 5));
    let (page, total) = list_with_total(&app, &alice, "?limit=2&offset=50").await;
    assert_eq!((page, total), (json!([]), 5));
    // (the PATCH above completed "Buy milk")
    let (page, total) = list_with_total(&app, &alice, "?status=completed&offset=1").await;
    assert_eq!(
        (titles(&page), total),
        (vec!["Write report", "Buy milk"], 3)
    );
    let (page, total) = list_with_total(&app, &alice, "?limit=1000&offset=0").await;
    assert_eq!((page.as_array().unwrap().len(), total), (5, 5));
    let (page, total) = list_with_total(&app, &alice, "?offset=9223372036854775807").await;
    assert_eq!((page, total), (json!([]), 5));
}

async fn bad_parameters_are_422(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alice = app.token("alice");
    for (query, field) in [
        ("status=", "status"),
        ("status=done", "status"),
        ("status=PENDING", "status"),
        ("completed=1", "completed"),
        ("completed=yes", "completed"),
        ("completed=True", "completed"),
        ("completed=", "completed"),
        ("sort=priority", "sort"),
        ("sort=", "sort"),
        ("sort=created_at;DROP", "sort"),
        ("order=up", "order"),
        ("order=ASC", "order"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-5", "limit"),
        ("limit=ten", "limit"),
        ("limit=", "limit"),
        ("limit=1.0", "limit"),
        ("offset=-1", "offset"),
        ("offset=abc", "offset"),
        ("offset=", "offset"),
        ("offset=9223372036854775808", "offset"),
        ("q=a%00b", "q"),
        ("status=%00", "status"),
    ] {
        let (status, body) = app.list(&alice, &format!("?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(error_fields(&body), [field], "{query}");
    }
    let (status, body) = app.list(&alice, &format!("?q={}", "a".repeat(1001))).await;
    assert_eq!(
        (status, error_fields(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["q".to_string()])
    );
    let (status, _) = app.list(&alice, &format!("?q={}", "é".repeat(1000))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "1000 code points is the limit, not 1000 bytes"
    );
    let (status, body) = app.list(&alice, "?limit=0&sort=x&status=y").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut fields = error_fields(&body);
    fields.sort();
    assert_eq!(fields, ["limit", "sort", "status"]);
}

on_each_database!(
    default_order_is_newest_first,
    filters_and_search,
    sorting_and_paging,
    bad_parameters_are_422
);
