<#
.SYNOPSIS
Remove what packaging\install.ps1 added (Windows).

.DESCRIPTION
Removes the private environment (%LOCALAPPDATA%\kdstudio\env), the kdstudio command and its
PATH entry, and the Start-menu entry. Your runs, prepared teachers and settings in
%LOCALAPPDATA%\kdstudio are kept unless you pass -Purge.

    powershell -ExecutionPolicy Bypass -File packaging\uninstall.ps1 [-Purge] [-Yes]

.PARAMETER Purge
Also delete every run, prepared teacher and the app's settings.
.PARAMETER Yes
Do not ask before -Purge deletes them.
#>
[CmdletBinding()]
param(
    [switch]$Purge,
    [switch]$Yes
)

$ErrorActionPreference = "Stop"
$Data = Join-Path $env:LOCALAPPDATA "kdstudio"
$BinDir = Join-Path $Data "bin"
$Marker = "KD Studio launcher (packaging/install.ps1); packaging/uninstall.ps1 removes it"

function Remove-Owned([string]$Path) {
    if (-not (Test-Path $Path)) { return }
    try { Remove-Item -Recurse -Force $Path }
    catch {
        Write-Host "Could not remove $Path ($($_.Exception.Message)): close KD Studio and run this again." -ForegroundColor Red
        exit 1
    }
    Write-Host "Removed $Path"
}

# The environment first: it fails while the app runs, and then nothing else is touched.
Remove-Owned (Join-Path $Data "env")

$cmd = Join-Path $BinDir "kdstudio.cmd"
if ((Test-Path $cmd) -and (Select-String -Path $cmd -SimpleMatch $Marker -Quiet)) { Remove-Owned $cmd }
if ((Test-Path $BinDir) -and -not (Get-ChildItem $BinDir -Force)) { Remove-Owned $BinDir }
foreach ($name in @("kdstudio-app.pyw", "kdstudio.ico", "app.log")) { Remove-Owned (Join-Path $Data $name) }
Remove-Owned (Join-Path ([Environment]::GetFolderPath("Programs")) "KD Studio.lnk")

# The PATH entry install.ps1 added, leaving the rest of the user's PATH as it was.
$key = [Microsoft.Win32.Registry]::CurrentUser.OpenSubKey("Environment", $true)
$userPath = [string]$key.GetValue("Path", "", [Microsoft.Win32.RegistryValueOptions]::DoNotExpandEnvironmentNames)
$entries = @($userPath -split ";" | Where-Object { $_ -ne "" })
$kept = @($entries | Where-Object { ($_ -ne "%LOCALAPPDATA%\kdstudio\bin") -and ($_ -ne $BinDir) })
if ($kept.Count -ne $entries.Count) {
    $key.SetValue("Path", ($kept -join ";"), [Microsoft.Win32.RegistryValueKind]::ExpandString)
    [Environment]::SetEnvironmentVariable("KDSTUDIO_PATH_CHANGED", "1", "User")
    [Environment]::SetEnvironmentVariable("KDSTUDIO_PATH_CHANGED", $null, "User")
    Write-Host "Removed $BinDir from your PATH"
}
$key.Close()

if ($Purge) {
    if (-not $Yes) {
        $answer = Read-Host "Delete every run, prepared teacher and setting in $Data? [y/N]"
        if ($answer -notmatch '^(y|yes)$') { Write-Host "Kept $Data."; exit 0 }
    }
    Remove-Owned $Data
    if ($env:KDSTUDIO_HOME) { Write-Host "KDSTUDIO_HOME is set: the runs in $env:KDSTUDIO_HOME were not touched." }
} elseif ((Test-Path $Data) -and (Get-ChildItem $Data -Force)) {
    Write-Host "Kept your runs, prepared teachers and settings in $Data"
    Write-Host "(uninstall.ps1 -Purge deletes them)."
} elseif (Test-Path $Data) {
    Remove-Item -Force $Data
}
Write-Host "Models downloaded from the Hugging Face Hub stay in its cache (%USERPROFILE%\.cache\huggingface)."
Write-Host "KD Studio is uninstalled."
