//! The `dialin` command line (DESIGN.md §"Command line"): run the gateway, check a
//! configuration, and manage PINs directly in the store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::pins::{ParticipantName, Pin, PinNamespace, PinRole, RoomName};
use crate::store::{NewPin, PinFilter, PinRecord, Store};

/// SIP gateway that lets phone callers join rooms with a PIN.
#[derive(Debug, Parser)]
#[command(name = "dialin", version, about)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "DIALIN_CONFIG",
        default_value = "configs/dialin.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve,
    /// Check the configuration file and print a summary.
    CheckConfig,
    /// Create, list and revoke PINs.
    Pin {
        #[command(subcommand)]
        command: PinCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PinCommand {
    /// Create a PIN for a room and print it.
    Create(CreateArgs),
    /// List PINs.
    List(ListArgs),
    /// Revoke a PIN.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long, value_parser = parse_room)]
    pub room: RoomName,
    #[arg(long, value_parser = parse_namespace, default_value = "default")]
    pub namespace: PinNamespace,
    /// Use this PIN instead of drawing one.
    #[arg(long, value_parser = parse_pin)]
    pub pin: Option<Pin>,
    /// RFC 3339 time the PIN becomes valid.
    #[arg(long, value_parser = parse_time)]
    pub valid_from: Option<DateTime<Utc>>,
    /// RFC 3339 time the PIN stops being valid.
    #[arg(long, value_parser = parse_time)]
    pub valid_until: Option<DateTime<Utc>>,
    /// Name the caller gets in the room.
    #[arg(long, value_parser = parse_participant)]
    pub participant_name: Option<ParticipantName>,
    /// What the caller is in the room: `participant` or `host`.
    #[arg(long, value_parser = parse_role, default_value = "participant")]
    pub role: PinRole,
    /// Callers of this participant PIN hold (music) until a host is in the room.
    #[arg(long)]
    pub wait_for_host: bool,
    /// Print the whole record as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_parser = parse_room)]
    pub room: Option<RoomName>,
    #[arg(long, value_parser = parse_namespace)]
    pub namespace: Option<PinNamespace>,
    /// Include revoked PINs.
    #[arg(long)]
    pub all: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[arg(long, value_parser = parse_namespace)]
    pub namespace: PinNamespace,
    #[arg(value_parser = parse_pin)]
    pub pin: Pin,
}

fn parse_room(s: &str) -> Result<RoomName, String> {
    RoomName::parse(s).map_err(|e| e.to_string())
}
fn parse_namespace(s: &str) -> Result<PinNamespace, String> {
    PinNamespace::parse(s).map_err(|e| e.to_string())
}
fn parse_pin(s: &str) -> Result<Pin, String> {
    Pin::parse(s).map_err(|e| e.to_string())
}
fn parse_participant(s: &str) -> Result<ParticipantName, String> {
    ParticipantName::parse(s).map_err(|e| e.to_string())
}
fn parse_role(s: &str) -> Result<PinRole, String> {
    s.parse::<PinRole>().map_err(|e| e.to_string())
}
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2030-01-15T09:00:00Z ({e})"))
}

/// Entry point of the `dialin` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` logs as its configuration says; a file that does not load is reported below.
    match (&cli.command, Config::load(&cli.config)) {
        (Command::Serve, Ok(config)) => crate::ops::log::init(config.log.format, &config.log.level),
        (Command::Serve, Err(_)) => crate::ops::log::init(crate::config::LogFormat::Text, "info"),
        _ => crate::ops::log::init(crate::config::LogFormat::Text, "warn"),
    }

    if let Command::CheckConfig = cli.command {
        return match Config::load(&cli.config) {
            Ok(config) => {
                println!("OK: {}", cli.config.display());
                print!("{}", config.summary());
                for w in config.warnings() {
                    println!("warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}: {e}", cli.config.display());
                ExitCode::FAILURE
            }
        };
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config).with_context(|| format!("{}", cli.config.display()))?;
    match cli.command {
        Command::CheckConfig => Ok(()),
        Command::Serve => crate::serve::run(config, cli.config).await,
        Command::Pin { command } => {
            let store = Store::open(&config.store.url, 1)
                .await
                .context("opening the store")?;
            let result = pin_command(&config, &store, command).await;
            store.close().await;
            result
        }
    }
}

async fn pin_command(config: &Config, store: &Store, command: PinCommand) -> anyhow::Result<()> {
    match command {
        PinCommand::Create(args) => {
            let Some(length) = config.pin_length_of(&args.namespace) else {
                bail!(
                    "no trunk uses PIN namespace {:?}, so no caller could use this PIN",
                    args.namespace.as_str()
                );
            };
            if let Some(pin) = &args.pin {
                if pin.len() != length {
                    bail!(
                        "PIN namespace {:?} uses {length}-digit PINs, this PIN has {} digits",
                        args.namespace.as_str(),
                        pin.len()
                    );
                }
            }
            let record = store
                .create_pin(
                    NewPin {
                        namespace: args.namespace,
                        room: args.room,
                        pin: args.pin,
                        length,
                        valid_from: args.valid_from,
                        valid_until: args.valid_until,
                        participant_name: args.participant_name,
                        role: args.role,
                        wait_for_host: args.wait_for_host,
                    },
                    Utc::now(),
                )
                .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                println!("{}", record.pin.expose());
            }
        }
        PinCommand::List(args) => {
            let pins = store
                .list_pins(&PinFilter {
                    room: args.room,
                    namespace: args.namespace,
                    include_revoked: args.all,
                })
                .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&pins)?);
            } else {
                print_table(&pins);
            }
        }
        PinCommand::Revoke(args) => {
            if !store.revoke(&args.namespace, &args.pin, Utc::now()).await? {
                bail!(
                    "no PIN {} in namespace {:?} (or it is already revoked)",
                    args.pin,
                    args.namespace.as_str()
                );
            }
            println!("revoked");
        }
    }
    Ok(())
}

fn print_table(pins: &[PinRecord]) {
    let time = |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    println!(
        "NAMESPACE\tPIN\tROOM\tVALID_FROM\tVALID_UNTIL\tPARTICIPANT\tROLE\tWAIT_FOR_HOST\tREVOKED"
    );
    for p in pins {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            p.namespace,
            p.pin.expose(),
            p.room,
            time(p.valid_from),
            time(p.valid_until),
            p.participant_name
                .as_ref()
                .map_or("-", ParticipantName::as_str),
            p.role,
            yes_no(p.wait_for_host),
            yes_no(p.revoked),
        );
    }
}
