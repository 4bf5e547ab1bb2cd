//! `kiln accounts`: what an admin needs for password accounts on the server's own store.
use clap::Subcommand;
use kiln_config::Config;
use kiln_services::Kiln;

#[derive(Subcommand)]
pub enum AccountsCommand {
    /// Print the links of account mails that were not sent over SMTP (no `[mail]
    /// smtp_host` configured, or the server still failing), newest first, so an admin can
    /// pass them on. Each link is a secret that works once.
    PendingLinks {
        /// How many to print.
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
}

pub async fn run(config: Config, command: AccountsCommand) -> anyhow::Result<()> {
    match command {
        AccountsCommand::PendingLinks { limit } => {
            let kiln = Kiln::open(config).await?;
            for p in kiln.accounts.pending_links(limit.min(1000)).await? {
                println!(
                    "{}  {:<8} {:<32} {}\n    {}",
                    p.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    p.status,
                    p.to,
                    p.subject,
                    p.link
                );
            }
            Ok(())
        }
    }
}
