//! A plain HTTP client for the daemon's endpoints on 127.0.0.1, and a parser of the Prometheus
//! text exposition strict enough that what it accepts a scraper would too (every sample's family
//! has HELP and TYPE, names and values are well formed).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http_body_util::BodyExt as _;

/// `GET path` on `address`: the status code and the body.
pub async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, address.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let code = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    connection.abort();
    (code, String::from_utf8(body.to_vec()).unwrap())
}

/// A parsed exposition: each family's (type, help), and each sample (name, labels, value).
pub struct Exposition {
    pub families: BTreeMap<String, (String, String)>,
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Exposition {
    /// The value of the sample `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(found, found_labels, _)| {
                found == name
                    && found_labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| found_labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, value)| *value)
    }
}

/// Parses `text`, panicking on anything a scraper would refuse.
pub fn parse_exposition(text: &str) -> Exposition {
    let mut families = BTreeMap::new();
    let mut helps = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and a text");
            assert!(!help.trim().is_empty(), "{name}: empty HELP");
            helps.insert(name.to_owned(), help.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
            assert!(["counter", "gauge", "histogram", "summary", "info"].contains(&kind), "{line}");
            let help = helps.get(name).unwrap_or_else(|| panic!("{name}: TYPE without HELP"));
            families.insert(name.to_owned(), (kind.to_owned(), help.clone()));
        } else {
            assert!(!line.starts_with('#'), "unexpected comment {line:?}");
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
            let value: f64 = match value {
                "+Inf" | "inf" => f64::INFINITY,
                other => other.parse().unwrap_or_else(|_| panic!("bad value: {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                    let labels = body
                        .split("\",")
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (key, value) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line:?}"));
                            (key.to_owned(), value.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad name {name:?}");
            let family = ["_total", "_sum", "_count", "_bucket"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|base| families.contains_key(*base)))
                .unwrap_or(&name);
            assert!(families.contains_key(family), "sample {name} has no HELP and TYPE");
            samples.push((name, labels, value));
        }
    }
    Exposition { families, samples }
}
