//! Loading: files, folders and stdin, multi-document YAML, every resource
//! typed, validated and placed (`file:line:col`).
//!
//! One bad document never hides the others: the loader reports every problem
//! it finds in one run, rejects only the resources that have errors, and
//! skips (with a note) kinds that are not mesh configuration, such as a
//! Deployment in the same folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diag::{Diagnostic, Diagnostics, Location, Severity};
use crate::path::{FieldPath, PathSeg};
use crate::resource::{Kind, Resource, Spec};
use crate::schema::common::ObjectMeta;
use crate::validate::{Checker, Validate, checks, cross};
use crate::yaml::de::{DeError, closest, from_node};
use crate::yaml::{Document, Node, NodeValue, parse_stream_at};

/// How to read resources.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Namespace of resources that do not name one (like `kubectl -n`).
    pub default_namespace: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_namespace: "default".to_owned(),
        }
    }
}

/// The outcome of a load: the accepted resources, in load order, and every
/// diagnostic (sorted by file and position).
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// Resources without errors, after duplicates were replaced.
    pub resources: Vec<Resource>,
    /// Errors, warnings and notes.
    pub diagnostics: Diagnostics,
}

/// Loads one YAML text named `file` (used in diagnostics).
pub fn load_str(file: &str, text: &str, opts: &LoadOptions) -> Loaded {
    let mut loader = Loader::new(opts.clone());
    loader.add_text(file, text);
    loader.finish()
}

/// Loads files and folders (`*.yaml` / `*.yml` below a folder, in path
/// order), and `-` for standard input.
pub fn load_paths<P: AsRef<Path>>(paths: &[P], opts: &LoadOptions) -> Loaded {
    let mut loader = Loader::new(opts.clone());
    for path in paths {
        loader.add_path(path.as_ref());
    }
    loader.finish()
}

/// The YAML files a path stands for: itself, or the `.yaml`/`.yml` files
/// below a folder, sorted so load order is stable.
pub fn expand_path(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let p = entry.path();
            let name = entry.file_name();
            // Editors and Kubernetes ConfigMap mounts leave hidden entries
            // (`.swp`, `..data`): never configuration.
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A document that typed and validated, with its tree kept for cross-resource
/// checks that need to point at fields.
pub(crate) struct Accepted {
    pub(crate) resource: Resource,
    pub(crate) root: Node,
}

/// Accumulates sources, then runs the cross-resource checks once.
pub struct Loader {
    opts: LoadOptions,
    accepted: Vec<Accepted>,
    diagnostics: Vec<Diagnostic>,
    order: usize,
}

impl Loader {
    /// A loader with these options.
    pub fn new(opts: LoadOptions) -> Self {
        Loader {
            opts,
            accepted: Vec::new(),
            diagnostics: Vec::new(),
            order: 0,
        }
    }

    /// Adds a file, a folder, or `-` (stdin).
    pub fn add_path(&mut self, path: &Path) {
        if path == Path::new("-") {
            let mut text = String::new();
            match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                Ok(_) => self.add_text("-", &text),
                Err(e) => self.io_error("-", &format!("cannot read standard input: {e}")),
            }
            return;
        }
        let shown = path.display().to_string();
        let files = match expand_path(path) {
            Ok(files) => files,
            Err(e) => return self.io_error(&shown, &format!("cannot read: {e}")),
        };
        for file in files {
            let name = file.display().to_string();
            match std::fs::read(&file) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => self.add_text(&name, &text),
                    Err(_) => self.io_error(&name, "the file is not UTF-8 text"),
                },
                Err(e) => self.io_error(&name, &format!("cannot read: {e}")),
            }
        }
    }

    fn io_error(&mut self, file: &str, message: &str) {
        self.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            location: Location {
                file: file.into(),
                pos: crate::yaml::Pos { line: 1, col: 1 },
            },
            resource: None,
            path: FieldPath::root(),
            message: message.to_owned(),
        });
    }

    /// Adds one YAML text. A large text is cut at document boundaries and
    /// its slices are parsed, typed and validated on all cores; the results
    /// are merged back in document order.
    pub fn add_text(&mut self, file: &str, text: &str) {
        let file: Arc<str> = file.into();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let slices = split_documents(text, threads);
        let opts = &self.opts;
        let results: Vec<SliceOutcome> = if slices.len() == 1 {
            slices
                .into_iter()
                .map(|(offset, slice)| process_slice(&file, slice, offset, opts))
                .collect()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = slices
                    .into_iter()
                    .map(|(offset, slice)| {
                        let file = file.clone();
                        scope.spawn(move || process_slice(&file, slice, offset, opts))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    })
                    .collect()
            })
        };
        for slice in results {
            for doc in slice.docs {
                self.diagnostics.extend(doc.diagnostics);
                if let Some(mut resource) = doc.resource {
                    resource.order = self.order;
                    self.accepted.push(Accepted {
                        resource,
                        root: doc.root,
                    });
                }
                self.order += 1;
            }
            self.diagnostics.extend(slice.syntax);
        }
    }

    /// Runs the cross-resource checks and returns the outcome.
    pub fn finish(mut self) -> Loaded {
        let accepted = cross::dedupe(std::mem::take(&mut self.accepted), &mut self.diagnostics);
        cross::check(&accepted, &mut self.diagnostics);
        let mut diagnostics = Diagnostics(self.diagnostics);
        diagnostics.sort();
        let mut resources = Vec::with_capacity(accepted.len());
        let mut trees = Vec::with_capacity(accepted.len());
        for a in accepted {
            resources.push(a.resource);
            trees.push(a.root);
        }
        // Freeing tens of thousands of trees takes a while and nobody waits
        // for it: do it off the caller's thread when there are many. If no
        // thread can be had, the trees are dropped right here instead.
        if trees.len() >= BACKGROUND_DROP_THRESHOLD {
            let _ = std::thread::Builder::new()
                .name("mesh-config-drop".to_owned())
                .spawn(move || drop(trees));
        }
        Loaded {
            resources,
            diagnostics,
        }
    }
}

/// One document's outcome: the resource when it has no errors, its tree, and
/// its diagnostics.
struct DocOutcome {
    resource: Option<Resource>,
    root: Node,
    diagnostics: Vec<Diagnostic>,
}

struct SliceOutcome {
    docs: Vec<DocOutcome>,
    syntax: Option<Diagnostic>,
}

/// From this many documents on, the loader frees their trees on a
/// background thread.
const BACKGROUND_DROP_THRESHOLD: usize = 1000;

/// Below this size a text is parsed on one core: threads cost more than
/// they save.
const PARALLEL_THRESHOLD: usize = 256 * 1024;

/// Cuts a stream into about `parts` slices at document markers (`---` at
/// the start of a line), with the line number each slice starts after. YAML
/// forbids a `---` line inside any scalar, so such a line always starts a
/// document. Directives (`%YAML`, `%TAG`) apply to what follows them, so a
/// stream with any is never cut.
fn split_documents(text: &str, parts: usize) -> Vec<(u32, &str)> {
    if parts < 2 || text.len() < PARALLEL_THRESHOLD || text.starts_with('%') || text.contains("\n%")
    {
        return vec![(0, text)];
    }
    let bytes = text.as_bytes();
    let mut cuts = Vec::with_capacity(parts);
    let mut searched_from = 0;
    for i in 1..parts {
        let target = (text.len() * i / parts).max(searched_from);
        let Some(found) = text[target..].find("\n---").map(|p| p + target + 1) else {
            break;
        };
        let after = bytes.get(found + 3).copied();
        if matches!(after, None | Some(b'\n' | b'\r' | b' ' | b'\t')) {
            cuts.push(found);
        }
        searched_from = found + 3;
    }
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    let mut line = 0u32;
    for cut in cuts {
        out.push((line, &text[start..cut]));
        line = line.saturating_add(count_line_breaks(&text[start..cut]));
        start = cut;
    }
    out.push((line, &text[start..]));
    out
}

/// Line breaks as YAML counts them: `\n`, `\r\n` and a lone `\r`.
fn count_line_breaks(text: &str) -> u32 {
    let bytes = text.as_bytes();
    let mut n = 0u32;
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'\n' => n = n.saturating_add(1),
            b'\r' if bytes.get(i + 1) != Some(&b'\n') => n = n.saturating_add(1),
            _ => {}
        }
    }
    n
}

fn process_slice(
    file: &Arc<str>,
    text: &str,
    line_offset: u32,
    opts: &LoadOptions,
) -> SliceOutcome {
    let (docs, syntax) = parse_stream_at(text, line_offset);
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        process_document(file, doc, opts, &mut out);
    }
    SliceOutcome {
        docs: out,
        syntax: syntax.map(|e| Diagnostic {
            severity: Severity::Error,
            location: Location {
                file: file.clone(),
                pos: e.pos,
            },
            resource: None,
            path: FieldPath::root(),
            message: format!("invalid YAML: {}", e.message),
        }),
    }
}

fn process_document(file: &Arc<str>, doc: Document, opts: &LoadOptions, out: &mut Vec<DocOutcome>) {
    // `kubectl get -o yaml` of several objects prints a List.
    if doc.root.get("kind").and_then(Node::as_str) == Some("List")
        && let Some(NodeValue::Seq(items)) = doc.root.get("items").map(|n| &n.value)
    {
        for item in items {
            let item_doc = Document {
                pos: item.pos,
                root: item.clone(),
            };
            process_document(file, item_doc, opts, out);
        }
        return;
    }
    let mut sink = DocSink {
        file: file.clone(),
        resource: None,
        out: Vec::new(),
    };
    let resource = read_resource(&doc, opts, &mut sink);
    let rejected = sink.out.iter().any(|d| d.severity == Severity::Error);
    out.push(DocOutcome {
        resource: resource.filter(|_| !rejected),
        root: doc.root,
        diagnostics: sink.out,
    });
}

/// Collects the diagnostics of one document.
struct DocSink {
    file: Arc<str>,
    resource: Option<String>,
    out: Vec<Diagnostic>,
}

impl DocSink {
    fn push(&mut self, severity: Severity, node: &Node, path: FieldPath, message: String) {
        self.out.push(Diagnostic {
            severity,
            location: Location {
                file: self.file.clone(),
                pos: node.pos,
            },
            resource: self.resource.clone(),
            path,
            message,
        });
    }

    fn de_error(&mut self, root: &Node, e: DeError) {
        let pos = e.pos.unwrap_or(root.pos);
        self.out.push(Diagnostic {
            severity: Severity::Error,
            location: Location {
                file: self.file.clone(),
                pos,
            },
            resource: self.resource.clone(),
            path: e.path,
            message: e.message,
        });
    }
}

fn field(name: &str) -> FieldPath {
    FieldPath(vec![PathSeg::Field(name.to_owned())])
}

const TOP_LEVEL: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

fn read_resource(doc: &Document, opts: &LoadOptions, sink: &mut DocSink) -> Option<Resource> {
    let root = &doc.root;
    let NodeValue::Map(entries) = &root.value else {
        sink.push(
            Severity::Error,
            root,
            FieldPath::root(),
            format!(
                "expected a resource (a mapping with apiVersion, kind, metadata and spec), found {}",
                root.describe()
            ),
        );
        return None;
    };
    let api_version = scalar_field(root, "apiVersion", sink)?;
    let kind_name = scalar_field(root, "kind", sink)?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));

    let kind = match Kind::lookup(group, &kind_name) {
        Some(kind) => kind,
        None if Kind::is_mesh_group(group) => {
            let names: Vec<&str> = Kind::ALL
                .iter()
                .filter(|k| k.group() == group)
                .map(|k| k.name())
                .collect();
            let hint = closest(&kind_name, &names)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            let node = root.get("kind").unwrap_or(root);
            sink.push(
                Severity::Error,
                node,
                field("kind"),
                format!(
                    "unknown kind `{kind_name}` in {group}; known kinds: {}{hint}",
                    names.join(", ")
                ),
            );
            return None;
        }
        None => {
            let name = root
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Node::as_str)
                .unwrap_or("?");
            sink.push(
                Severity::Note,
                root,
                FieldPath::root(),
                format!("skipped {kind_name} {name} ({api_version}): not a mesh resource"),
            );
            return None;
        }
    };

    // Name the resource from the raw tree first, so even metadata errors say
    // which resource they are about.
    let meta_node = root.get("metadata");
    let raw = |key: &str| meta_node.and_then(|m| m.get(key)).and_then(Node::as_str);
    sink.resource = Some(format!(
        "{kind}/{}/{}",
        raw("namespace").unwrap_or(&opts.default_namespace),
        raw("name").filter(|n| !n.is_empty()).unwrap_or("?")
    ));
    let mut meta: ObjectMeta = match meta_node {
        Some(node) => {
            let (meta, _) = deserialize_reporting_unknown(node, sink, |n| {
                from_node::<ObjectMeta>(n, &[PathSeg::Field("metadata".to_owned())])
            });
            meta?
        }
        None => ObjectMeta::default(),
    };
    if meta.namespace.is_none() {
        meta.namespace = Some(opts.default_namespace.clone());
    }
    sink.resource = Some(format!(
        "{}/{}/{}",
        kind,
        meta.namespace.as_deref().unwrap_or_default(),
        if meta.name.is_empty() {
            "?"
        } else {
            &meta.name
        }
    ));
    if meta.name.is_empty() {
        sink.push(
            Severity::Error,
            meta_node.unwrap_or(root),
            field("metadata"),
            "missing required field `name`".to_owned(),
        );
    } else {
        let mut cx = Checker::new(&[
            PathSeg::Field("metadata".to_owned()),
            PathSeg::Field("name".to_owned()),
        ]);
        checks::dns1123_subdomain(&mut cx, "name", &meta.name);
        if kind == Kind::ServiceProfile {
            crate::schema::linkerd_profile::check_name(
                &mut cx,
                &meta.name,
                meta.namespace.as_deref().unwrap_or_default(),
            );
        }
        if let Some(ns) = &meta.namespace {
            let mut ns_cx = Checker::new(&[
                PathSeg::Field("metadata".to_owned()),
                PathSeg::Field("namespace".to_owned()),
            ]);
            checks::dns1123_subdomain(&mut ns_cx, "namespace", ns);
            place_findings(root, ns_cx, sink);
        }
        place_findings(root, cx, sink);
    }

    if !kind.versions().contains(&version) {
        let node = root.get("apiVersion").unwrap_or(root);
        sink.push(
            Severity::Error,
            node,
            field("apiVersion"),
            format!(
                "{group}/{version} is not a supported version of {kind}; use one of {}",
                kind.versions()
                    .iter()
                    .map(|v| format!("{group}/{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }

    for (key, _) in entries {
        let name = key.as_str().unwrap_or_default();
        if !TOP_LEVEL.contains(&name) {
            let hint = closest(name, TOP_LEVEL)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            sink.push(
                Severity::Error,
                key,
                field(name),
                format!("unknown field `{name}`{hint}"),
            );
        }
    }

    // A missing `spec` is an empty one, as the API server would store it.
    let null = Node {
        pos: root.pos,
        value: NodeValue::Scalar {
            text: String::new(),
            plain: true,
        },
    };
    let spec_node = root.get("spec").unwrap_or(&null);
    let (spec, pruned) =
        deserialize_reporting_unknown(spec_node, sink, |n| Spec::from_node(kind, n));
    let spec = spec?;
    // Unknown fields already reject the resource; validating the rest still
    // helps the user fix everything in one pass.
    let mut cx = Checker::new(&[PathSeg::Field("spec".to_owned())]);
    spec.validate(&mut cx);
    // Checks that depend on where the resource lives, not only on its spec.
    if let Spec::PeerAuthentication(pa) = &spec {
        pa.validate_in_namespace(
            meta.namespace.as_deref().unwrap_or_default(),
            crate::schema::istio_security::DEFAULT_ROOT_NAMESPACE,
            &mut cx,
        );
    }
    let tree_root;
    let root_for_findings = match pruned {
        Some(spec_pruned) => {
            let mut r = root.clone();
            if let NodeValue::Map(entries) = &mut r.value
                && let Some((_, v)) = entries.iter_mut().find(|(k, _)| k.as_str() == Some("spec"))
            {
                *v = spec_pruned;
            }
            tree_root = r;
            &tree_root
        }
        None => root,
    };
    place_findings(root_for_findings, cx, sink);

    Some(Resource {
        kind,
        api_version,
        meta,
        spec,
        location: Location {
            file: sink.file.clone(),
            pos: doc.pos,
        },
        // Assigned when the document's slice is merged back in order.
        order: 0,
    })
}

fn place_findings(root: &Node, cx: Checker, sink: &mut DocSink) {
    for f in cx.into_findings() {
        let node = f.path.locate(root);
        sink.push(f.severity, node, f.path, f.message);
    }
}

fn scalar_field(root: &Node, name: &str, sink: &mut DocSink) -> Option<String> {
    match root.get(name) {
        Some(node) => match node.as_str() {
            Some(s) if !s.is_empty() => Some(s.to_owned()),
            _ => {
                sink.push(
                    Severity::Error,
                    node,
                    field(name),
                    format!("expected a string, found {}", node.describe()),
                );
                None
            }
        },
        None => {
            sink.push(
                Severity::Error,
                root,
                FieldPath::root(),
                format!("missing required field `{name}`"),
            );
            None
        }
    }
}

/// Bounds the prune-and-retry loop on a document full of typos.
const MAX_UNKNOWN_FIELDS: usize = 64;

/// Deserializes with `f`; on an unknown field, reports it, drops that key
/// from a copy of the tree and tries again, so every unknown field of the
/// document is reported in one run. Other errors stop at the first. Returns
/// the pruned tree when any key was dropped.
fn deserialize_reporting_unknown<T>(
    node: &Node,
    sink: &mut DocSink,
    f: impl Fn(&Node) -> Result<T, DeError>,
) -> (Option<T>, Option<Node>) {
    let mut pruned: Option<Node> = None;
    for _ in 0..MAX_UNKNOWN_FIELDS {
        let current = pruned.as_ref().unwrap_or(node);
        match f(current) {
            // With unknown fields the resource is already rejected, but the
            // value still goes through validation so all problems show at once.
            Ok(v) => return (Some(v), pruned),
            Err(e) if e.unknown_field => {
                let rel = e
                    .path
                    .0
                    .get(1..)
                    .map(<[PathSeg]>::to_vec)
                    .unwrap_or_default();
                sink.de_error(node, e);
                let mut copy = current.clone();
                if !remove_key(&mut copy, &rel) {
                    return (None, pruned);
                }
                pruned = Some(copy);
            }
            Err(e) => {
                sink.de_error(node, e);
                return (None, pruned);
            }
        }
    }
    (None, pruned)
}

fn remove_key(node: &mut Node, path: &[PathSeg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = node;
    for seg in parents {
        let next = match (seg, &mut cur.value) {
            (PathSeg::Field(name), NodeValue::Map(entries)) => entries
                .iter_mut()
                .find(|(k, _)| k.as_str() == Some(name))
                .map(|(_, v)| v),
            (PathSeg::Index(i), NodeValue::Seq(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match (last, &mut cur.value) {
        (PathSeg::Field(name), NodeValue::Map(entries)) => {
            let before = entries.len();
            entries.retain(|(k, _)| k.as_str() != Some(name));
            entries.len() != before
        }
        _ => false,
    }
}
