//! The fake API server driven by kube-rs's own client, watcher and event recorder.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Config, Resource, ResourceExt};
use portcullis_fake_apiserver::{FakeApiServer, Propagation};
use serde_json::json;

const NS: &str = "prod";
const WAIT: Duration = Duration::from_secs(10);

async fn client(server: &FakeApiServer) -> Client {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path, NS).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn configmap(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    }
}

fn route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("portcullis.dev", "v1alpha1", "ApiRoute"),
        "apiroutes",
    )
}

fn route(name: &str, path: &str) -> DynamicObject {
    let mut obj = DynamicObject::new(name, &route_resource()).within(NS);
    obj.data = json!({"spec": {"pathPrefix": path, "workloadSelector": {}, "backend": {"port": 8080}}});
    obj
}

#[tokio::test]
async fn create_get_list_replace_delete() {
    let server = FakeApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, NS);

    let created = api
        .create(&PostParams::default(), &configmap("a", &[("app", "a")], &[("k", "v")]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let rv: u64 = created.resource_version().unwrap().parse().unwrap();
    assert!(rv > 0);
    let err = api
        .create(&PostParams::default(), &configmap("a", &[], &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"));

    api.create(&PostParams::default(), &configmap("b", &[("app", "b")], &[]))
        .await
        .unwrap();
    let got = api.get("a").await.unwrap();
    assert_eq!(got.data.unwrap()["k"], "v");
    let selected = api.list(&ListParams::default().labels("app=b")).await.unwrap();
    assert_eq!(selected.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["b"]);
    let all: Api<ConfigMap> = Api::all(client(&server).await);
    assert_eq!(all.list(&ListParams::default()).await.unwrap().items.len(), 2);

    // Replace with a stale resourceVersion is a conflict; with the current one it works.
    let mut stale = created.clone();
    stale.data = Some(BTreeMap::from([("k".into(), "w".into())]));
    api.replace("a", &PostParams::default(), &stale).await.unwrap();
    let err = api.replace("a", &PostParams::default(), &stale).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"));

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(matches!(api.get("a").await, Err(kube::Error::Api(s)) if s.code == 404));
    assert!(server.get("configmaps", NS, "a").is_none());
}

#[tokio::test]
async fn list_pages_with_continue_tokens() {
    let server = FakeApiServer::start().await.unwrap();
    for i in 0..5 {
        server.create(&configmap(&format!("cm-{i}"), &[], &[])).unwrap();
    }
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, NS);
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().unwrap();
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let third = api
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(&second.metadata.continue_.clone().unwrap()),
        )
        .await
        .unwrap();
    let names: Vec<String> = [first, second, third.clone()]
        .into_iter()
        .flat_map(|l| l.items)
        .map(|c| c.name_any())
        .collect();
    assert_eq!(names, ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]);
    assert!(third.metadata.continue_.is_none());
}

#[tokio::test]
async fn server_side_apply_merges_removes_and_detects_conflicts() {
    let server = FakeApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, NS);
    let ours = PatchParams::apply("ours");

    let first = api
        .patch(
            "x",
            &ours,
            &Patch::Apply(configmap("x", &[("a", "1")], &[("k1", "v1"), ("k2", "v2")])),
        )
        .await
        .unwrap();
    // Someone else sets a label; re-applying the same configuration changes nothing.
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"b": "2"}}})),
    )
    .await
    .unwrap();
    let before = api.get("x").await.unwrap();
    let again = api
        .patch(
            "x",
            &ours,
            &Patch::Apply(configmap("x", &[("a", "1")], &[("k1", "v1"), ("k2", "v2")])),
        )
        .await
        .unwrap();
    assert_eq!(
        again.resource_version(),
        before.resource_version(),
        "a no-op apply is not a write"
    );
    assert_ne!(first.resource_version(), before.resource_version());

    // Dropping k2 from the applied configuration removes it; the other label stays.
    let applied = api
        .patch(
            "x",
            &ours,
            &Patch::Apply(configmap("x", &[("a", "1")], &[("k1", "v1")])),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap(), BTreeMap::from([("k1".into(), "v1".into())]));
    assert_eq!(applied.metadata.labels.unwrap().len(), 2);

    // Another manager changing our field conflicts unless forced.
    let theirs = PatchParams::apply("theirs");
    let err = api
        .patch("x", &theirs, &Patch::Apply(configmap("x", &[], &[("k1", "other")])))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409));
    let forced = api
        .patch(
            "x",
            &theirs.force(),
            &Patch::Apply(configmap("x", &[], &[("k1", "other")])),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["k1"], "other");
}

#[tokio::test]
async fn secrets_fold_string_data() {
    let server = FakeApiServer::start().await.unwrap();
    let api: Api<Secret> = Api::namespaced(client(&server).await, NS);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("s".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("password".into(), "hunter2".into())])),
        ..Default::default()
    };
    let created = api.create(&PostParams::default(), &secret).await.unwrap();
    assert_eq!(created.data.unwrap()["password"].0, b"hunter2");
    assert!(created.string_data.is_none());
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let server = FakeApiServer::start().await.unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client(&server).await, NS, &route_resource());
    let mut obj = route("r", "/a");
    obj.data["status"] = json!({"ignored": true});
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(
        created.data.get("status").is_none(),
        "status is not written through the main resource"
    );

    let patched = api
        .patch_status(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["observedGeneration"], 1);
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status writes keep the generation"
    );

    let labelled = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}, "status": {"observedGeneration": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(1),
        "metadata changes keep the generation"
    );
    assert_eq!(labelled.data["status"]["observedGeneration"], 1);

    let respec = api
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pathPrefix": "/b"}})),
        )
        .await
        .unwrap();
    assert_eq!(respec.metadata.generation, Some(2));

    // Status by server-side apply.
    let applied = api
        .patch_status(
            "r",
            &PatchParams::apply("op"),
            &Patch::Apply(json!({
                "apiVersion": "portcullis.dev/v1alpha1", "kind": "ApiRoute",
                "metadata": {"name": "r"}, "status": {"observedGeneration": 2},
            })),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["status"]["observedGeneration"], 2);
    assert_eq!(applied.data["spec"]["pathPrefix"], "/b");
}

#[tokio::test]
async fn deleting_an_owner_collects_its_dependents() {
    let server = FakeApiServer::start().await.unwrap();
    let client = client(&server).await;
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &route_resource());
    let r1 = routes.create(&PostParams::default(), &route("r1", "/1")).await.unwrap();
    let r2 = routes.create(&PostParams::default(), &route("r2", "/2")).await.unwrap();
    let owner = |r: &DynamicObject| OwnerReference {
        api_version: "portcullis.dev/v1alpha1".into(),
        kind: "ApiRoute".into(),
        name: r.name_any(),
        uid: r.uid().unwrap(),
        ..Default::default()
    };
    let cms: Api<ConfigMap> = Api::namespaced(client, NS);
    let mut only_r1 = configmap("only-r1", &[], &[]);
    only_r1.metadata.owner_references = Some(vec![owner(&r1)]);
    let mut both = configmap("both", &[], &[]);
    both.metadata.owner_references = Some(vec![owner(&r1), owner(&r2)]);
    cms.create(&PostParams::default(), &only_r1).await.unwrap();
    cms.create(&PostParams::default(), &both).await.unwrap();

    routes.delete("r1", &DeleteParams::default()).await.unwrap();
    assert!(server.get("configmaps", NS, "only-r1").is_none());
    let kept: ConfigMap = server.get_as("configmaps", NS, "both").unwrap();
    assert_eq!(kept.metadata.owner_references.unwrap(), vec![owner(&r2)]);

    server
        .delete("apiroutes.portcullis.dev", NS, "r2", Propagation::Orphan)
        .unwrap();
    let orphan: ConfigMap = server.get_as("configmaps", NS, "both").unwrap();
    assert!(orphan.metadata.owner_references.is_none());
}

#[tokio::test]
async fn watches_replay_follow_select_and_bookmark() {
    let server = FakeApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, NS);
    server.create(&configmap("old", &[("app", "a")], &[])).unwrap();
    let listed = api.list(&ListParams::default()).await.unwrap();
    let version = listed.metadata.resource_version.unwrap();

    let params = WatchParams::default().labels("app=a").timeout(30);
    let mut stream = api.watch(&params, &version).await.unwrap().boxed();
    server.create(&configmap("new", &[("app", "a")], &[])).unwrap();
    server.create(&configmap("other", &[("app", "b")], &[])).unwrap();
    server
        .merge_patch("configmaps", NS, "new", &json!({"metadata": {"labels": {"app": "b"}}}))
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(WAIT, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event {
            WatchEvent::Added(cm) => seen.push(format!("added {}", cm.name_any())),
            WatchEvent::Deleted(cm) => seen.push(format!("deleted {}", cm.name_any())),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["added new", "deleted new"], "leaving the selector is a deletion");

    // Bookmarks when asked for.
    let mut stream = api
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .unwrap()
        .boxed();
    let bookmark = async {
        loop {
            if let WatchEvent::Bookmark(b) = stream.try_next().await.unwrap().unwrap() {
                return b;
            }
        }
    };
    let bookmark = tokio::time::timeout(WAIT, bookmark).await.unwrap();
    assert_eq!(
        bookmark.metadata.resource_version,
        server.resource_version().to_string()
    );

    // A version older than the history is Gone.
    server.compact();
    let mut stream = api.watch(&WatchParams::default(), &version).await.unwrap().boxed();
    let event = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(event, WatchEvent::Error(e) if e.code == 410));
}

#[tokio::test]
async fn kube_runtime_watcher_follows_changes_and_recovers_from_gone() {
    let server = FakeApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, NS);
    server.create(&configmap("a", &[], &[])).unwrap();
    let mut events = watcher(api, watcher::Config::default()).boxed();
    let mut next_apply = async || loop {
        let event = tokio::time::timeout(WAIT, events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event {
            watcher::Event::Apply(cm) | watcher::Event::InitApply(cm) => return cm.name_any(),
            _ => continue,
        }
    };
    assert_eq!(next_apply().await, "a");
    server.create(&configmap("b", &[], &[])).unwrap();
    assert_eq!(next_apply().await, "b");
    // The history is lost: the watcher relists and sees what changed meanwhile.
    server.compact();
    server.create(&configmap("c", &[], &[])).unwrap();
    let mut names = Vec::new();
    while !names.contains(&"c".to_owned()) {
        names.push(next_apply().await);
    }
}

#[tokio::test]
async fn leases_and_events() {
    let server = FakeApiServer::start().await.unwrap();
    let client = client(&server).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("leader".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut taken = created.clone();
    taken.spec = Some(Default::default());
    leases.replace("leader", &PostParams::default(), &taken).await.unwrap();
    // A second replica holding the old version loses the race.
    assert!(leases.replace("leader", &PostParams::default(), &taken).await.is_err());

    let recorder = Recorder::new(client, Reporter::from("test"));
    let cm = server.create(&configmap("target", &[], &[])).unwrap();
    let cm: ConfigMap = serde_json::from_value(cm).unwrap();
    let event = Event {
        type_: EventType::Warning,
        reason: "Rejected".into(),
        note: Some("spec.x: bad".into()),
        action: "Validate".into(),
        secondary: None,
    };
    recorder.publish(&event, &cm.object_ref(&())).await.unwrap();
    recorder.publish(&event, &cm.object_ref(&())).await.unwrap();
    let events = server.list("events.events.k8s.io", Some(NS));
    assert_eq!(events.len(), 1, "the repeat is a patch of the same event series");
    assert_eq!(events[0]["reason"], "Rejected");
    assert_eq!(events[0]["series"]["count"], 2);
}

#[tokio::test]
async fn injected_failures_answer_instead_of_the_store() {
    let server = FakeApiServer::start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, NS);
    server.fail_requests("POST", "/configmaps", 500, 2);
    for _ in 0..2 {
        let err = api
            .create(&PostParams::default(), &configmap("a", &[], &[]))
            .await
            .unwrap_err();
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 500), "{err}");
    }
    api.create(&PostParams::default(), &configmap("a", &[], &[]))
        .await
        .unwrap();
    assert_eq!(server.requests().iter().filter(|r| r.method == "POST").count(), 3);
}

#[tokio::test]
async fn metadata_watchers_get_no_content() {
    let server = FakeApiServer::start().await.unwrap();
    let api: Api<Secret> = Api::namespaced(client(&server).await, NS);
    let secret = |name: &str, value: &str| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": name, "namespace": NS, "annotations": {"a": "1"}},
               "stringData": {"password": value}})
    };
    server.create(&secret("a", "hunter2")).unwrap();
    let listed = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].metadata.annotations.as_ref().unwrap()["a"], "1");
    let metadata: Api<kube::core::PartialObjectMeta<Secret>> = Api::namespaced(client(&server).await, NS);
    let mut events = watcher(metadata, watcher::Config::default()).boxed();
    let mut applied = Vec::new();
    while applied.len() < 2 {
        let event = tokio::time::timeout(WAIT, events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let watcher::Event::Apply(m) | watcher::Event::InitApply(m) = event {
            applied.push(m.metadata.name.clone().unwrap());
            if applied.len() == 1 {
                server.create(&secret("b", "swordfish")).unwrap();
            }
        }
    }
    assert_eq!(applied, ["a", "b"]);
    // Every list and watch asked for metadata, and nothing of the content was sent.
    let requests = server.requests();
    assert!(requests.iter().filter(|r| r.method == "GET").all(|r| r.metadata_only()));
    // The full object is still there for a plain get.
    let full = api.get("a").await.unwrap();
    assert_eq!(full.data.unwrap()["password"].0, b"hunter2");
}

#[tokio::test]
async fn subject_access_reviews_follow_the_allow_list() {
    use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
    use portcullis_fake_apiserver::AccessRule;
    let server = FakeApiServer::start().await.unwrap();
    let api: Api<SubjectAccessReview> = Api::all(client(&server).await);
    let ask = async |user: &str, groups: &[&str], name: &str| {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.into()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some("get".into()),
                    resource: Some("secrets".into()),
                    namespace: Some(NS.into()),
                    name: Some(name.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &review)
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    };
    assert!(!ask("alice", &[], "db").await, "nothing is allowed by default");
    server.allow(AccessRule::get_secret("alice", NS, "db"));
    server.allow(AccessRule {
        subject: "group:admins".into(),
        name: "*".into(),
        ..AccessRule::get_secret("", NS, "")
    });
    assert!(ask("alice", &[], "db").await);
    assert!(!ask("alice", &[], "other").await);
    assert!(!ask("bob", &[], "db").await);
    assert!(ask("bob", &["admins"], "other").await);
    assert_eq!(server.access_reviews().len(), 5);
    assert_eq!(server.access_reviews()[1]["status"]["allowed"], true);
    // Failures can be injected like for any request.
    server.fail_requests("POST", "subjectaccessreviews", 500, 1);
    assert!(
        api.create(&PostParams::default(), &SubjectAccessReview::default())
            .await
            .is_err()
    );
}
